//! `rswarm stack ...`: stacks from Compose files. `stack config` needs no daemon.
//!
//! `deploy` is declarative: the files are loaded, converted and checked before anything is
//! sent, so a file that fails changes nothing; then the stack's missing networks and
//! services are created, an existing service is updated only when its converted spec
//! differs from the stored one (an unchanged service keeps its tasks), and `--prune`
//! removes the stack's services no longer in the files. A stack's objects are found by the
//! label `com.docker.stack.namespace=STACK` (on services and networks).

use crate::client;
use crate::commands::service::{desired_filter, ls_row, print_tasks, print_warnings};
use crate::output::{self, Format};
use anyhow::Context;
use clap::{Args, Subcommand};
use rswarm_proto::model::reference;
use rswarm_proto::model::{
    NetworkAttachmentConfig, NetworkSpec, ServiceMode, ServiceSpec, UpdateConfig,
    UpdateFailureAction, UpdateOrder,
};
use rswarm_proto::pb;
use rswarm_proto::pb::control_client::ControlClient;
use rswarm_stack::spec::NAMESPACE_LABEL;
use rswarm_stack::{Env, Loaded, Source, StackSpec};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

/// How long `stack rm` waits for the tasks of the removed services to go.
const RM_TASKS_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Subcommand)]
pub enum StackCommand {
    /// Print the final Compose file, after merging the files and interpolating variables.
    Config(ConfigArgs),
    /// Deploy a new stack or update an existing one.
    Deploy(DeployArgs),
    /// List stacks.
    Ls(FormatArg),
    /// List the tasks of a stack.
    Ps(PsArgs),
    /// List the services of a stack.
    Services {
        stack: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Remove stacks: their services, then (once their tasks are gone) their networks.
    Rm {
        #[arg(required = true)]
        stacks: Vec<String>,
    },
}

#[derive(Args)]
pub struct ConfigArgs {
    /// A Compose file, or "-" for stdin; repeat to merge several, in order.
    #[arg(
        short = 'c',
        long = "compose-file",
        required = true,
        value_name = "FILE"
    )]
    compose_files: Vec<String>,
}

#[derive(Args)]
pub struct DeployArgs {
    /// A Compose file, or "-" for stdin; repeat to merge several, in order.
    #[arg(
        short = 'c',
        long = "compose-file",
        required = true,
        value_name = "FILE"
    )]
    compose_files: Vec<String>,
    /// Remove the stack's services that are no longer in the files.
    #[arg(long)]
    prune: bool,
    /// Ask the registry for the images' digests and pin the services to them: on every
    /// deploy, only for images changed in the files, or never (images as written).
    #[arg(long, value_enum, default_value_t = ResolveImage::Always)]
    resolve_image: ResolveImage,
    /// The stack's name.
    stack: String,
}

/// `stack deploy --resolve-image`, as Docker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ResolveImage {
    Always,
    Changed,
    Never,
}

#[derive(Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Args)]
pub struct PsArgs {
    stack: String,
    /// desired-state=running|shutdown|accepted
    #[arg(short, long)]
    filter: Vec<String>,
    #[command(flatten)]
    format: FormatArg,
}

pub async fn run(host: &str, command: StackCommand) -> anyhow::Result<()> {
    match command {
        StackCommand::Config(a) => config(&a),
        StackCommand::Deploy(a) => deploy(host, &a).await,
        StackCommand::Ls(f) => ls(host, f.format).await,
        StackCommand::Ps(a) => ps(host, &a).await,
        StackCommand::Services { stack, format } => services(host, &stack, format.format).await,
        StackCommand::Rm { stacks } => rm(host, &stacks).await,
    }
}

fn config(a: &ConfigArgs) -> anyhow::Result<()> {
    let loaded = load(&a.compose_files)?;
    print!("{}", loaded.to_yaml()?);
    Ok(())
}

/// The stack a service or network belongs to, by its namespace label.
fn stack_label(labels: &std::collections::HashMap<String, String>) -> Option<&str> {
    labels.get(NAMESPACE_LABEL).map(String::as_str)
}

fn service_name(s: &pb::Service) -> &str {
    s.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

fn service_stack(s: &pb::Service) -> Option<&str> {
    s.spec.as_ref().and_then(|s| stack_label(&s.labels))
}

fn network_name(n: &pb::Network) -> &str {
    n.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

fn network_stack(n: &pb::Network) -> Option<&str> {
    n.spec.as_ref().and_then(|s| stack_label(&s.labels))
}

async fn all_services(c: &mut ControlClient<Channel>) -> anyhow::Result<Vec<pb::Service>> {
    Ok(c.list_services(pb::ListServicesRequest {})
        .await?
        .into_inner()
        .services)
}

async fn all_networks(c: &mut ControlClient<Channel>) -> anyhow::Result<Vec<pb::Network>> {
    Ok(c.list_networks(pb::ListNetworksRequest {})
        .await?
        .into_inner()
        .networks)
}

/// The services of stack `stack`, by name.
async fn services_of(
    c: &mut ControlClient<Channel>,
    stack: &str,
) -> anyhow::Result<Vec<pb::Service>> {
    let mut v: Vec<pb::Service> = all_services(c)
        .await?
        .into_iter()
        .filter(|s| service_stack(s) == Some(stack))
        .collect();
    v.sort_by(|a, b| service_name(a).cmp(service_name(b)));
    Ok(v)
}

/// What the cluster does not do with a file's options: network driver options and IPAM
/// drivers are ignored with a warning. Returns the warnings.
fn check_supported(stack: &StackSpec) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    for n in &stack.networks {
        if !n.external && (!n.driver_opts.is_empty() || n.ipam_driver.is_some()) {
            warnings.push(format!(
                "warning: network {}: driver_opts and ipam driver are not supported: ignoring them",
                n.name
            ));
        }
    }
    Ok(warnings)
}

/// The spec to create a stack network with, checked as the managers check it.
fn network_spec(n: &rswarm_stack::StackNetwork) -> anyhow::Result<pb::NetworkSpec> {
    if n.subnets.len() > 1 {
        anyhow::bail!(
            "network {}: only one subnet is supported, the file gives {}",
            n.name,
            n.subnets.len()
        );
    }
    let spec = pb::NetworkSpec {
        name: n.name.clone(),
        driver: n.driver.clone(),
        labels: n.labels.clone().into_iter().collect(),
        attachable: n.attachable,
        internal: n.internal,
        ingress: false,
        ipam: Some(pb::IpamConfig {
            subnet: n.subnets.first().cloned().unwrap_or_default(),
            gateway: String::new(),
        }),
    };
    NetworkSpec::try_from(spec.clone()).with_context(|| format!("network {}", n.name))?;
    Ok(spec)
}

/// The service spec a stack service is deployed with (networks by name), normalised as the
/// managers store it and checked as they check it.
fn service_spec(s: &rswarm_stack::StackService) -> anyhow::Result<ServiceSpec> {
    let mut spec = s.spec.clone();
    spec.networks = s
        .networks
        .iter()
        .map(|n| NetworkAttachmentConfig {
            target: n.target.clone(),
            aliases: n.aliases.clone(),
        })
        .collect();
    spec.endpoint_mode = match s.endpoint_mode {
        rswarm_stack::EndpointMode::Vip => rswarm_proto::model::EndpointMode::Vip,
        rswarm_stack::EndpointMode::Dnsrr => rswarm_proto::model::EndpointMode::Dnsrr,
    };
    spec.ports = s
        .ports
        .iter()
        .map(|p| {
            use rswarm_proto::model::{PortConfig, Protocol, PublishMode};
            let protocol = match p.protocol {
                rswarm_stack::Protocol::Tcp => Protocol::Tcp,
                rswarm_stack::Protocol::Udp => Protocol::Udp,
                rswarm_stack::Protocol::Sctp => anyhow::bail!(
                    "service {}: port {}/sctp: only tcp and udp ports can be published",
                    s.spec.name,
                    p.target
                ),
            };
            let mode = match p.mode {
                rswarm_stack::PublishMode::Ingress => PublishMode::Ingress,
                rswarm_stack::PublishMode::Host => PublishMode::Host,
            };
            if mode == PublishMode::Host && p.published.is_none() {
                anyhow::bail!(
                    "service {}: a host-mode port needs its published port (target {})",
                    s.spec.name,
                    p.target
                );
            }
            Ok(PortConfig {
                protocol,
                target: p.target,
                published: p.published.unwrap_or(0),
                mode,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    // Secrets and configs are named; the manager resolves the names to ids.
    // A relative target is under /run/secrets/ for a secret and under / for a config, as
    // Docker reads it.
    let file_ref = |f: &rswarm_stack::FileRef, base: &str| rswarm_proto::model::FileReference {
        source_id: String::new(),
        source_name: f.name.clone(),
        target: if f.target.starts_with('/') {
            f.target.clone()
        } else {
            format!("{base}{}", f.target)
        },
        uid: f.uid.clone(),
        gid: f.gid.clone(),
        mode: f.mode,
    };
    spec.task.container.secrets = s
        .secrets
        .iter()
        .map(|f| file_ref(f, "/run/secrets/"))
        .collect();
    spec.task.container.configs = s.configs.iter().map(|f| file_ref(f, "/")).collect();
    if let Some(u) = &s.update_config {
        spec.update_config = update_config(u);
    }
    if let Some(u) = &s.rollback_config {
        spec.rollback_config = update_config(u);
    }
    let name = spec.name.clone();
    let spec = ServiceSpec::try_from(pb::ServiceSpec::from(&spec))
        .with_context(|| format!("service {name}"))?;
    rswarm_manager::scheduler::parse_constraints(&spec.task.placement.constraints)
        .with_context(|| format!("service {name}"))?;
    rswarm_manager::scheduler::parse_preferences(&spec.task.placement.preferences)
        .with_context(|| format!("service {name}"))?;
    Ok(spec)
}

/// A file's `update_config` (or `rollback_config`), Swarm's defaults filled in, as the model
/// holds it.
fn update_config(u: &rswarm_stack::UpdateConfig) -> UpdateConfig {
    UpdateConfig {
        parallelism: u.parallelism,
        delay: u.delay,
        failure_action: match u.failure_action {
            rswarm_stack::FailureAction::Pause => UpdateFailureAction::Pause,
            rswarm_stack::FailureAction::Continue => UpdateFailureAction::Continue,
            rswarm_stack::FailureAction::Rollback => UpdateFailureAction::Rollback,
        },
        monitor: u.monitor,
        max_failure_ratio_permille: (u.max_failure_ratio.clamp(0.0, 1.0) * 1000.0).round() as u32,
        order: match u.order {
            rswarm_stack::UpdateOrder::StopFirst => UpdateOrder::StopFirst,
            rswarm_stack::UpdateOrder::StartFirst => UpdateOrder::StartFirst,
        },
    }
}

/// Whether `stored` already has the spec `wanted` asks for, its networks named by id
/// through `ids` (network name to id), in any order.
fn same_spec(stored: &pb::Service, wanted: &ServiceSpec, ids: &BTreeMap<String, String>) -> bool {
    let Some(Ok(mut stored)) = stored.spec.clone().map(ServiceSpec::try_from) else {
        return false;
    };
    let mut wanted = wanted.clone();
    for n in &mut wanted.networks {
        if let Some(id) = ids.get(&n.target) {
            n.target.clone_from(id);
        }
    }
    stored.networks.sort_by(|a, b| a.target.cmp(&b.target));
    wanted.networks.sort_by(|a, b| a.target.cmp(&b.target));
    // Stored references carry the resolved ids; the file names them.
    for r in stored
        .task
        .container
        .secrets
        .iter_mut()
        .chain(stored.task.container.configs.iter_mut())
    {
        r.source_id.clear();
    }
    stored == wanted
}

/// Whether the file's image is the one the service runs: the same reference, or the same
/// repository and tag when the file names no digest (the stored one may be pinned).
fn same_image(stored: &str, file: &str) -> bool {
    let file_has_digest = reference::Reference::parse(file).is_ok_and(|r| r.digest.is_some());
    stored == file || (!file_has_digest && reference::same_name_and_tag(stored, file))
}

/// An update `deploy` sends for an existing service.
#[derive(Debug, PartialEq)]
struct PlannedUpdate {
    spec: ServiceSpec,
    query_registry: bool,
    /// The files change the service (else it only goes to have its tag looked up again).
    changed: bool,
}

/// What `deploy` sends for an existing service `cur` that the files want as `wanted`, or
/// `None` to leave it alone.
///
/// An image unchanged in the file keeps its pinned digest, so that only real changes
/// count. With `always`, a service otherwise unchanged still goes back (its stored spec,
/// with the file's tag unpinned) to have the tag looked up again; the manager writes
/// nothing when the digest is the same, so its tasks stay.
fn plan_update(
    cur: &pb::Service,
    mut wanted: ServiceSpec,
    ids: &BTreeMap<String, String>,
    mode: ResolveImage,
) -> Option<PlannedUpdate> {
    let stored = cur
        .spec
        .clone()
        .map(ServiceSpec::try_from)
        .and_then(Result::ok);
    let file_image = wanted.task.container.image.clone();
    let stored_image = stored.as_ref().map(|s| s.task.container.image.clone());
    let unchanged = stored_image
        .as_deref()
        .is_some_and(|s| same_image(s, &file_image));
    if let (true, Some(img)) = (unchanged, &stored_image) {
        wanted.task.container.image.clone_from(img);
    }
    let query = match mode {
        ResolveImage::Always => true,
        ResolveImage::Changed => !unchanged,
        ResolveImage::Never => false,
    };
    if same_spec(cur, &wanted, ids) {
        // Nothing to look up when the file itself pins the digest.
        let file_pinned =
            reference::Reference::parse(&file_image).is_ok_and(|r| r.digest.is_some());
        if mode != ResolveImage::Always || file_pinned {
            return None;
        }
        let mut again = stored?;
        again.task.container.image = file_image;
        return Some(PlannedUpdate {
            spec: again,
            query_registry: true,
            changed: false,
        });
    }
    if query {
        wanted.task.container.image = file_image;
    }
    Some(PlannedUpdate {
        spec: wanted,
        query_registry: query,
        changed: true,
    })
}

fn mode_name(m: &ServiceMode) -> &'static str {
    match m {
        ServiceMode::Global => "global",
        ServiceMode::Replicated { .. } => "replicated",
    }
}

async fn deploy(host: &str, a: &DeployArgs) -> anyhow::Result<()> {
    // Everything that can be checked without the cluster is, before anything changes.
    let loaded = load(&a.compose_files)?;
    let stack = rswarm_stack::convert(&a.stack, &loaded.compose)?;
    let warnings = check_supported(&stack)?;
    let mut wanted = Vec::new();
    for s in &stack.services {
        wanted.push(service_spec(s)?);
    }
    let mut to_create = Vec::new();
    for n in stack.networks.iter().filter(|n| !n.external) {
        to_create.push(network_spec(n)?);
    }

    // The data of the secrets and configs the stack creates, read before anything changes.
    let mut files = Vec::new();
    for (kind, objs) in [("secret", &stack.secrets), ("config", &stack.configs)] {
        for o in objs.iter().filter(|o| !o.external) {
            let Some(path) = &o.file else { continue };
            let data = std::fs::read(path)
                .with_context(|| format!("{kind} {}: {}", o.name, path.display()))?;
            files.push((kind, o, data));
        }
    }

    let mut c = client::connect(host).await?;
    // Secrets and configs first: services refer to them.
    let secrets: BTreeSet<String> = c
        .list_secrets(pb::ListSecretsRequest {})
        .await?
        .into_inner()
        .secrets
        .into_iter()
        .filter_map(|s| s.spec.map(|s| s.name))
        .collect();
    let configs: BTreeSet<String> = c
        .list_configs(pb::ListConfigsRequest {})
        .await?
        .into_inner()
        .configs
        .into_iter()
        .filter_map(|s| s.spec.map(|s| s.name))
        .collect();
    for (kind, objs, have) in [
        ("secret", &stack.secrets, &secrets),
        ("config", &stack.configs, &configs),
    ] {
        for o in objs.iter().filter(|o| o.external) {
            if !have.contains(&o.name) {
                anyhow::bail!(
                    "{kind} {} is declared as external, but it does not exist: create it with `rswarm {kind} create {} FILE`",
                    o.name,
                    o.name
                );
            }
        }
    }
    for (kind, o, data) in files {
        let have = if kind == "secret" { &secrets } else { &configs };
        // Existing ones are left as they are: their data cannot change under running tasks.
        if have.contains(&o.name) {
            continue;
        }
        println!("Creating {kind} {}", o.name);
        let spec = pb::SecretSpec {
            name: o.name.clone(),
            labels: o.labels.clone().into_iter().collect(),
            data,
        };
        if kind == "secret" {
            c.create_secret(pb::CreateSecretRequest { spec: Some(spec) })
                .await
                .map(drop)
        } else {
            c.create_config(pb::CreateConfigRequest { spec: Some(spec) })
                .await
                .map(drop)
        }
        .with_context(|| format!("creating {kind} {}", o.name))?;
    }
    let networks = all_networks(&mut c).await?;
    let services = all_services(&mut c).await?;
    let have_network = |name: &str| networks.iter().any(|n| network_name(n) == name);
    for n in stack.networks.iter().filter(|n| n.external) {
        if !have_network(&n.name) {
            anyhow::bail!(
                "network {} is declared as external, but it does not exist: create it with `rswarm network create {}`",
                n.name,
                n.name
            );
        }
    }
    let by_name: BTreeMap<&str, &pb::Service> =
        services.iter().map(|s| (service_name(s), s)).collect();
    for w in &wanted {
        if let Some(Ok(cur)) = by_name
            .get(w.name.as_str())
            .and_then(|s| s.spec.clone())
            .map(ServiceSpec::try_from)
        {
            if mode_name(&cur.mode) != mode_name(&w.mode) {
                anyhow::bail!(
                    "service {} is {} and the file makes it {}: a service's mode cannot change; remove the service first",
                    w.name,
                    mode_name(&cur.mode),
                    mode_name(&w.mode)
                );
            }
        }
    }
    for w in &warnings {
        eprintln!("{w}");
    }

    for spec in to_create {
        if have_network(&spec.name) {
            continue;
        }
        println!("Creating network {}", spec.name);
        c.create_network(pb::CreateNetworkRequest {
            spec: Some(spec.clone()),
        })
        .await
        .with_context(|| format!("creating network {}", spec.name))?;
    }
    let ids: BTreeMap<String, String> = all_networks(&mut c)
        .await?
        .iter()
        .map(|n| (network_name(n).to_owned(), n.id.clone()))
        .collect();

    for mut w in wanted.iter().cloned() {
        match by_name.get(w.name.as_str()) {
            None => {
                println!("Creating service {}", w.name);
                let resp = c
                    .create_service(pb::CreateServiceRequest {
                        spec: Some(pb::ServiceSpec::from(&w)),
                        query_registry: a.resolve_image != ResolveImage::Never,
                    })
                    .await
                    .with_context(|| format!("creating service {}", w.name))?;
                print_warnings(&resp.into_inner().warnings);
            }
            Some(cur) => {
                // A forced redeploy of the stored service is not undone by the file.
                if let Some(f) = cur
                    .spec
                    .as_ref()
                    .and_then(|s| s.task.as_ref())
                    .map(|t| t.force_update)
                {
                    w.task.force_update = f;
                }
                let name = w.name.clone();
                let Some(PlannedUpdate {
                    spec,
                    query_registry,
                    changed,
                }) = plan_update(cur, w, &ids, a.resolve_image)
                else {
                    continue;
                };
                if changed {
                    println!("Updating service {name} (id: {})", cur.id);
                }
                let version = cur.meta.map(|m| m.version).unwrap_or(0);
                let resp = c
                    .update_service(pb::UpdateServiceRequest {
                        service: cur.id.clone(),
                        version,
                        spec: Some(pb::ServiceSpec::from(&spec)),
                        query_registry,
                    })
                    .await
                    .with_context(|| format!("updating service {name}"))?
                    .into_inner();
                print_warnings(&resp.warnings);
                // Only asked to look the tag up again: say so when it had moved.
                let written = resp.service.and_then(|s| s.meta).map(|m| m.version) != Some(version);
                if !changed && written {
                    println!(
                        "Updating service {name} (id: {}): its image changed",
                        cur.id
                    );
                }
            }
        }
    }

    if a.prune {
        let keep: BTreeSet<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
        for s in services
            .iter()
            .filter(|s| service_stack(s) == Some(a.stack.as_str()))
            .filter(|s| !keep.contains(service_name(s)))
        {
            println!("Removing service {}", service_name(s));
            c.remove_service(pb::RemoveServiceRequest {
                service: s.id.clone(),
            })
            .await
            .with_context(|| format!("removing service {}", service_name(s)))?;
        }
    }
    Ok(())
}

async fn ls(host: &str, format: Format) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    let mut stacks: BTreeMap<String, usize> = BTreeMap::new();
    for s in all_services(&mut c).await? {
        if let Some(name) = service_stack(&s) {
            *stacks.entry(name.to_owned()).or_insert(0) += 1;
        }
    }
    match format {
        Format::Json => output::json(&Value::Array(
            stacks
                .iter()
                .map(|(name, n)| json!({ "name": name, "services": n }))
                .collect(),
        )),
        Format::Table => {
            output::table(
                &["NAME", "SERVICES"],
                stacks
                    .iter()
                    .map(|(name, n)| vec![name.clone(), n.to_string()])
                    .collect(),
            );
            Ok(())
        }
    }
}

async fn ps(host: &str, a: &PsArgs) -> anyhow::Result<()> {
    let desired = desired_filter(&a.filter)?;
    let mut c = client::connect(host).await?;
    let services = services_of(&mut c, &a.stack).await?;
    if services.is_empty() {
        anyhow::bail!("nothing found in stack: {}", a.stack);
    }
    let mut all = Vec::new();
    for s in &services {
        let tasks = c
            .list_tasks(pb::ListTasksRequest {
                service: s.id.clone(),
                node: String::new(),
                desired_state: desired.clone(),
            })
            .await?
            .into_inner()
            .tasks;
        all.extend(tasks);
    }
    print_tasks(all, a.format.format)
}

async fn services(host: &str, stack: &str, format: Format) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    let services = services_of(&mut c, stack).await?;
    match format {
        Format::Json => output::json(&Value::Array(services.iter().map(ls_row).collect())),
        Format::Table => {
            if services.is_empty() {
                eprintln!("Nothing found in stack: {stack}");
                return Ok(());
            }
            let rows = services
                .iter()
                .map(|s| {
                    let r = ls_row(s);
                    vec![
                        s.id.chars().take(12).collect(),
                        service_name(s).to_owned(),
                        r["mode"].as_str().unwrap_or("").to_owned(),
                        format!("{}/{}", s.replicas_running, s.replicas_desired),
                        r["image"].as_str().unwrap_or("").to_owned(),
                        String::new(),
                    ]
                })
                .collect();
            output::table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], rows);
            Ok(())
        }
    }
}

async fn rm(host: &str, stacks: &[String]) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    let mut errors = Vec::new();
    for stack in stacks {
        if let Err(e) = rm_one(&mut c, stack).await {
            errors.push(client::error_line(&e));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}

/// Removes a stack's services, waits (up to a deadline) for their tasks to go, then removes
/// its networks; external networks carry no stack label and stay.
/// The (id, name) of the secrets or configs labelled as `stack`'s.
fn labelled(objs: &[pb::Secret], stack: &str) -> Vec<(String, String)> {
    objs.iter()
        .filter_map(|o| {
            let spec = o.spec.as_ref()?;
            (stack_label(&spec.labels) == Some(stack)).then(|| (o.id.clone(), spec.name.clone()))
        })
        .collect()
}

async fn rm_one(c: &mut ControlClient<Channel>, stack: &str) -> anyhow::Result<()> {
    let services = services_of(c, stack).await?;
    let networks: Vec<pb::Network> = all_networks(c)
        .await?
        .into_iter()
        .filter(|n| network_stack(n) == Some(stack))
        .collect();
    if services.is_empty() && networks.is_empty() {
        eprintln!("Nothing found in stack: {stack}");
        return Ok(());
    }
    let mut removed = BTreeSet::new();
    for s in &services {
        println!("Removing service {}", service_name(s));
        match c
            .remove_service(pb::RemoveServiceRequest {
                service: s.id.clone(),
            })
            .await
        {
            Ok(_) => {
                removed.insert(s.id.clone());
            }
            // Gone already (a concurrent rm): nothing to do.
            Err(st) if st.code() == tonic::Code::NotFound => {
                removed.insert(s.id.clone());
            }
            Err(st) => {
                return Err(
                    anyhow::Error::new(st).context(format!("removing service {}", service_name(s)))
                )
            }
        }
    }
    let deadline = tokio::time::Instant::now() + RM_TASKS_DEADLINE;
    let left = loop {
        let left: Vec<pb::Task> = c
            .list_tasks(pb::ListTasksRequest::default())
            .await?
            .into_inner()
            .tasks
            .into_iter()
            .filter(|t| removed.contains(&t.service_id))
            .collect();
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for n in &networks {
        println!("Removing network {}", network_name(n));
        c.remove_network(pb::RemoveNetworkRequest {
            network: n.id.clone(),
        })
        .await
        .map_err(|st| {
            anyhow::Error::new(st).context(format!("removing network {}", network_name(n)))
        })?;
    }
    // The stack's own secrets and configs (external ones carry no stack label).
    let secrets = c
        .list_secrets(pb::ListSecretsRequest {})
        .await?
        .into_inner()
        .secrets;
    for (id, n) in labelled(&secrets, stack) {
        println!("Removing secret {n}");
        c.remove_secret(pb::RemoveSecretRequest { secret: id })
            .await
            .map_err(|st| anyhow::Error::new(st).context(format!("removing secret {n}")))?;
    }
    let configs = c
        .list_configs(pb::ListConfigsRequest {})
        .await?
        .into_inner()
        .configs;
    for (id, n) in labelled(&configs, stack) {
        println!("Removing config {n}");
        c.remove_config(pb::RemoveConfigRequest { config: id })
            .await
            .map_err(|st| anyhow::Error::new(st).context(format!("removing config {n}")))?;
    }
    if !left.is_empty() {
        let some: Vec<String> = left
            .iter()
            .take(5)
            .map(|t| {
                let st = t.status.as_ref().map(|s| s.state.as_str()).unwrap_or("");
                if t.node_hostname.is_empty() {
                    format!("{} ({st})", t.name)
                } else {
                    format!("{} on {} ({st})", t.name, t.node_hostname)
                }
            })
            .collect();
        anyhow::bail!(
            "stack {stack}: {} task(s) of its services still had not stopped after {}s: {}{}",
            left.len(),
            RM_TASKS_DEADLINE.as_secs(),
            some.join(", "),
            if left.len() > some.len() { ", ..." } else { "" }
        );
    }
    Ok(())
}

/// Loads a stack's Compose files with this process's environment, and prints the
/// warnings (ignored options, unset variables) on stderr.
pub fn load(files: &[String]) -> anyhow::Result<Loaded> {
    let env: Env = std::env::vars().collect();
    let loaded = if files.iter().any(|f| f == "-") {
        let mut sources = Vec::new();
        for f in files {
            let text = if f == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the Compose file from stdin")?;
                text
            } else {
                std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?
            };
            sources.push(Source {
                name: if f == "-" {
                    "<stdin>".to_owned()
                } else {
                    f.clone()
                },
                text,
            });
        }
        let first = files.first().map(String::as_str).unwrap_or("-");
        let dir = if first == "-" {
            std::env::current_dir().context("cannot find the current directory")?
        } else {
            let parent = Path::new(first).parent().unwrap_or(Path::new("."));
            std::path::absolute(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })?
        };
        rswarm_stack::load_sources(&sources, &dir, &env)?
    } else {
        let paths: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
        rswarm_stack::load(&paths, &env)?
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(yaml: &str) -> StackSpec {
        let loaded = rswarm_stack::load_sources(
            &[Source {
                name: "stack.yml".into(),
                text: yaml.into(),
            }],
            &std::env::temp_dir(),
            &Env::default(),
        )
        .expect("load");
        rswarm_stack::convert("demo", &loaded.compose).expect("convert")
    }

    const TWO: &str = "services:\n  web:\n    image: busybox\n    networks: [front, back]\n    ports: [\"8080:80\"]\n  api:\n    image: busybox\nnetworks:\n  front: {}\n  back: {}\n";

    #[test]
    fn secrets_and_configs_become_named_references_and_ports_are_published() {
        let with_secret = TWO.replace(
            "  api:\n    image: busybox\n",
            "  api:\n    image: busybox\n    secrets: [pw]\nsecrets:\n  pw: {external: true}\n",
        );
        let st = stack(&with_secret);
        check_supported(&st).expect("secrets are supported");
        let api = st
            .services
            .iter()
            .find(|s| s.spec.name == "demo_api")
            .expect("api");
        let spec = service_spec(api).expect("valid");
        let refs = &spec.task.container.secrets;
        assert_eq!(refs.len(), 1, "{refs:?}");
        assert_eq!(refs[0].source_name, "pw");
        assert_eq!(refs[0].target, "/run/secrets/pw");
        let warnings = check_supported(&stack(TWO)).expect("ports are supported");
        assert!(warnings.is_empty(), "{warnings:?}");
        let two = stack(TWO);
        let web = two
            .services
            .iter()
            .find(|s| s.spec.name == "demo_web")
            .expect("web");
        let ports = service_spec(web).expect("valid").ports;
        assert_eq!(ports.len(), 1);
        assert_eq!((ports[0].published, ports[0].target), (8080, 80));
        assert_eq!(ports[0].mode, rswarm_proto::model::PublishMode::Ingress);
    }

    #[test]
    fn update_and_rollback_configs_are_kept() {
        let yaml = "services:\n  web:\n    image: busybox\n    deploy:\n      update_config: {parallelism: 2, order: start-first, max_failure_ratio: 0.25}\n      rollback_config: {failure_action: continue}\n";
        let spec = stack(yaml);
        let web = service_spec(&spec.services[0]).expect("valid");
        assert_eq!(web.update_config.parallelism, 2);
        assert_eq!(web.update_config.order, UpdateOrder::StartFirst);
        assert_eq!(web.update_config.max_failure_ratio_permille, 250);
        assert_eq!(
            web.rollback_config.failure_action,
            UpdateFailureAction::Continue
        );
        assert_eq!(web.rollback_config.parallelism, 1);
    }

    #[test]
    fn specs_compare_with_networks_by_id_in_any_order() {
        let spec = stack(TWO);
        let web = spec
            .services
            .iter()
            .find(|s| s.spec.name == "demo_web")
            .expect("demo_web");
        let wanted = service_spec(web).expect("valid");
        assert_eq!(wanted.networks.len(), 2);
        assert!(wanted
            .networks
            .iter()
            .all(|n| n.aliases.contains(&"web".to_owned())));
        let ids: BTreeMap<String, String> = [
            ("demo_back".to_owned(), "id-back".to_owned()),
            ("demo_front".to_owned(), "id-front".to_owned()),
        ]
        .into();
        let mut stored_spec = wanted.clone();
        for n in &mut stored_spec.networks {
            n.target = ids[&n.target].clone();
        }
        stored_spec.networks.reverse();
        let stored = pb::Service {
            spec: Some(pb::ServiceSpec::from(&stored_spec)),
            ..Default::default()
        };
        assert!(same_spec(&stored, &wanted, &ids));
        let mut changed = wanted.clone();
        changed.mode = ServiceMode::Replicated { replicas: 3 };
        assert!(!same_spec(&stored, &changed, &ids));
        let mut changed = wanted.clone();
        changed.task.container.env.push("A=1".into());
        assert!(!same_spec(&stored, &changed, &ids));
        let mut changed = wanted;
        changed.networks.pop();
        assert!(!same_spec(&stored, &changed, &ids));
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// `demo_api` from TWO as the files want it, and as stored after a deploy that pinned
    /// its image.
    fn api_wanted_and_stored() -> (ServiceSpec, pb::Service) {
        let spec = stack(TWO);
        let api = spec
            .services
            .iter()
            .find(|s| s.spec.name == "demo_api")
            .expect("demo_api");
        let wanted = service_spec(api).expect("valid");
        let mut stored = wanted.clone();
        stored.task.container.image = format!("busybox:latest@{D}");
        let cur = pb::Service {
            spec: Some(pb::ServiceSpec::from(&stored)),
            ..Default::default()
        };
        (wanted, cur)
    }

    #[test]
    fn resolve_image_modes_send_what_docker_sends() {
        let ids = BTreeMap::new();
        let (wanted, cur) = api_wanted_and_stored();
        let stored = ServiceSpec::try_from(cur.spec.clone().expect("spec")).expect("valid");

        // Unchanged file: `never` and `changed` send nothing; `always` sends the stored spec
        // with the tag unpinned, to be looked up again (the manager writes nothing if the
        // digest is the same).
        for mode in [ResolveImage::Never, ResolveImage::Changed] {
            assert_eq!(
                plan_update(&cur, wanted.clone(), &ids, mode),
                None,
                "{mode:?}"
            );
        }
        let p = plan_update(&cur, wanted.clone(), &ids, ResolveImage::Always).expect("always");
        assert!(p.query_registry && !p.changed);
        assert_eq!(p.spec.task.container.image, "busybox");
        let mut back = p.spec.clone();
        back.task.container.image = stored.task.container.image.clone();
        assert_eq!(back, stored, "only the image differs from the stored spec");

        // Another change, same image: the pinned image is kept, asked again only by `always`.
        let mut more = wanted.clone();
        more.task.container.env.push("A=1".into());
        for (mode, query, image) in [
            (ResolveImage::Never, false, format!("busybox:latest@{D}")),
            (ResolveImage::Changed, false, format!("busybox:latest@{D}")),
            (ResolveImage::Always, true, "busybox".to_owned()),
        ] {
            let p = plan_update(&cur, more.clone(), &ids, mode).expect("changed");
            assert!(p.changed, "{mode:?}");
            assert_eq!(
                (p.query_registry, p.spec.task.container.image.as_str()),
                (query, image.as_str()),
                "{mode:?}"
            );
        }

        // A new image in the file: resolved unless `never`, which sends it as written.
        let mut moved = wanted.clone();
        moved.task.container.image = "busybox:2".into();
        for (mode, query) in [
            (ResolveImage::Never, false),
            (ResolveImage::Changed, true),
            (ResolveImage::Always, true),
        ] {
            let p = plan_update(&cur, moved.clone(), &ids, mode).expect("new image");
            assert_eq!(
                (p.query_registry, p.spec.task.container.image.as_str()),
                (query, "busybox:2"),
                "{mode:?}"
            );
        }

        // A file that pins the stored digest itself has nothing to look up.
        let mut pinned = wanted.clone();
        pinned.task.container.image = format!("busybox:latest@{D}");
        assert_eq!(plan_update(&cur, pinned, &ids, ResolveImage::Always), None);

        // A service left unpinned (its registry was away) is looked up again by `always`.
        let unpinned = pb::Service {
            spec: Some(pb::ServiceSpec::from(&wanted)),
            ..Default::default()
        };
        let p = plan_update(&unpinned, wanted.clone(), &ids, ResolveImage::Always);
        assert_eq!(
            p.map(|p| (p.query_registry, p.changed, p.spec == wanted)),
            Some((true, false, true))
        );
        assert_eq!(
            plan_update(&unpinned, wanted, &ids, ResolveImage::Changed),
            None
        );
    }
}
