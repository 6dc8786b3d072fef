//! `lab up`: checks first (nothing is made until every check passes), then containerd and
//! the network at once, the registry and every daemon at once, init on h1 and every join at
//! once, and a wait until every node is ready. Any failure (or Ctrl-C) takes down what was
//! made, through the same code as `lab down`.

use super::layout::{self, Layout};
use super::ledger::Ledger;
use super::{down, net, procs, require_root, require_tools, runtime, DirArg};
use crate::client;
use anyhow::Context;
use clap::Args;
use rswarm_proto::pb;
use std::process::Child;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct UpArgs {
    /// How many hosts (h1..hN).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// How many of them are managers (h1..hM); the rest are workers.
    #[arg(long, default_value_t = 1)]
    managers: u32,
    /// How often nodes heartbeat (a node is down after 3 missed beats).
    #[arg(long, default_value = "5s")]
    dispatcher_heartbeat: String,
    #[command(flatten)]
    dir: DirArg,
}

/// How long a daemon may take to answer on its socket, and the cluster to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

pub async fn up(a: UpArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    // Caught from the start, so that an interrupted `up` always takes back what it made.
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("catch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("catch SIGTERM")?;
    if !(1..=layout::MAX_NODES).contains(&a.nodes) {
        anyhow::bail!("--nodes must be between 1 and {}", layout::MAX_NODES);
    }
    if !(1..=a.nodes).contains(&a.managers) {
        anyhow::bail!("--managers must be between 1 and --nodes ({})", a.nodes);
    }
    let heartbeat = rswarm_proto::model::parse_duration(&a.dispatcher_heartbeat)
        .context("--dispatcher-heartbeat")?;
    if heartbeat < Duration::from_millis(100) {
        anyhow::bail!("--dispatcher-heartbeat must be at least 100ms");
    }
    require_root("lab up")?;
    require_tools()?;
    let dir = layout::resolve_dir(&a.dir.dir)
        .with_context(|| format!("lab dir {}", a.dir.dir.display()))?;
    let l = Layout::new(dir.clone(), a.nodes);
    let shown = dir.display();
    if l.ledger().exists() {
        anyhow::bail!(
            "a lab already exists in {shown}: use it (`rswarm lab status --dir {shown}`) or take it down first (`rswarm lab down --dir {shown}`)"
        );
    }
    let existed = dir.exists();
    if existed {
        let empty = std::fs::read_dir(&dir)
            .with_context(|| format!("lab dir {shown}"))?
            .next()
            .is_none();
        if !empty {
            anyhow::bail!("{shown} exists and is not empty: give `lab up` a new or empty --dir");
        }
    }
    l.check_socket_paths()?;
    if let Some(what) = net::subnet_in_use().await? {
        anyhow::bail!(
            "{}/{} is already in use on this machine ({what}): is another lab up? Take it down first",
            layout::SUBNET,
            layout::PREFIX_LEN
        );
    }
    for ns in l.all_netns() {
        if net::netns_exists(&ns) {
            anyhow::bail!("network namespace {ns} already exists: a lab in {shown} was not taken down (`rswarm lab down --dir {shown}`)");
        }
    }
    if net::link_exists(&l.leg()).await {
        anyhow::bail!(
            "link {} already exists: a lab in {shown} was not taken down (`rswarm lab down --dir {shown}`)",
            l.leg()
        );
    }

    std::fs::create_dir_all(&dir).with_context(|| format!("create {shown}"))?;
    let mut ledger = Ledger {
        dir: dir.clone(),
        id: l.id.clone(),
        nodes: a.nodes,
        managers: a.managers,
        made_dir: !existed,
        ..Default::default()
    };
    if let Err(e) = ledger.save(&l.ledger()) {
        if !existed {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(e);
    }

    let result = tokio::select! {
        r = build(&l, &mut ledger, heartbeat) => r,
        _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    };
    match result {
        Ok(roles) => {
            ledger.ready = true;
            ledger.save(&l.ledger())?;
            print_summary(&l, &ledger, &roles, t0.elapsed());
            Ok(())
        }
        Err(e) => {
            let errors = down::teardown(&l).await;
            if errors.is_empty() {
                Err(e.context("lab up failed (everything it made is removed again)"))
            } else {
                Err(e.context(format!(
                    "lab up failed, and so did removing what it made ({}): run `rswarm lab down --dir {shown}`",
                    errors.join("; ")
                )))
            }
        }
    }
}

/// Everything after the checks; returns each host's role.
async fn build(
    l: &Layout,
    ledger: &mut Ledger,
    heartbeat: Duration,
) -> anyhow::Result<Vec<String>> {
    runtime::choose_containerd(l, ledger)?;
    let own = ledger.own_containerd;
    let containerd = async {
        if own {
            runtime::start_own_containerd(l).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let (containerd, network) = tokio::join!(containerd, net::build(l, ledger));
    // Keep our own containerd's handle, so that it is reaped if it dies while we wait.
    let _containerd: Option<Child> = containerd?;
    network?;

    let mut registry = runtime::start_registry(l)?;
    let mut daemons = Vec::new();
    for n in l.hosts() {
        daemons.push((n, start_daemon(l, ledger, n)?));
    }

    // Every daemon's socket and the registry's port.
    let start = Instant::now();
    let mut registry_up = false;
    loop {
        let mut waiting = Vec::new();
        for (n, child) in &mut daemons {
            if !runtime::answers(&l.socket(*n)) {
                exited(l, *n, child)?;
                waiting.push(Layout::host_name(*n));
            }
        }
        if !registry_up {
            registry_up = runtime::registry_answers().await;
            if !registry_up {
                if let Ok(Some(status)) = registry.try_wait() {
                    anyhow::bail!(
                        "the registry exited ({status}): {}",
                        procs::tail(&l.registry_dir().join("registry.log"), 3)
                    );
                }
                waiting.push("the registry".into());
            }
        }
        if waiting.is_empty() {
            break;
        }
        if start.elapsed() > START_TIMEOUT {
            anyhow::bail!(
                "timed out after {}s waiting for {}",
                START_TIMEOUT.as_secs(),
                waiting.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    }

    // init on h1; every other host joins at once.
    let mut c1 = client::connect(&host_url(l, 1)).await?;
    c1.init(pb::InitRequest {
        dispatcher_heartbeat_ms: heartbeat.as_millis() as u64,
        ..Default::default()
    })
    .await
    .context("init on h1")?;
    let token = |role: &str| {
        let mut c = c1.clone();
        let role = role.to_owned();
        async move {
            c.get_join_token(pb::GetJoinTokenRequest {
                role,
                rotate: false,
            })
            .await
            .map(|r| r.into_inner().token)
        }
    };
    let (manager_token, worker_token) = (token("manager").await?, token("worker").await?);
    let joins = l.hosts().skip(1).map(|n| {
        let token = if n <= ledger.managers {
            manager_token.clone()
        } else {
            worker_token.clone()
        };
        async move {
            let mut c = client::connect(&host_url(l, n)).await?;
            c.join(pb::JoinRequest {
                token,
                remote_addr: Layout::cluster_addr(1),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
            .with_context(|| format!("join h{n}"))?;
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(joins).await {
        r?;
    }

    // Every node ready, with the role it should have and a container runtime.
    let start = Instant::now();
    loop {
        let nodes = c1
            .list_nodes(pb::ListNodesRequest {})
            .await
            .context("node ls on h1")?
            .into_inner()
            .nodes;
        let mut roles = vec![String::new(); l.nodes as usize];
        let mut waiting = Vec::new();
        for n in l.hosts() {
            let name = Layout::host_name(n);
            let want = if n <= ledger.managers {
                "manager"
            } else {
                "worker"
            };
            let node = nodes
                .iter()
                .find(|x| x.description.as_ref().is_some_and(|d| d.hostname == name));
            let Some(node) = node else {
                waiting.push(format!("{name} (not listed)"));
                continue;
            };
            let state = node.status.as_ref().map_or("", |s| s.state.as_str());
            if node
                .description
                .as_ref()
                .is_some_and(|d| d.runtime_unavailable)
            {
                anyhow::bail!(
                    "{name} has no container runtime (containerd at {}): see {}",
                    ledger.containerd_socket.display(),
                    l.daemon_log(n).display()
                );
            }
            if state != "ready" || node.role != want {
                waiting.push(format!("{name} ({state} {})", node.role));
            }
            roles[(n - 1) as usize] = node.role.clone();
        }
        if waiting.is_empty() {
            return Ok(roles);
        }
        for (n, child) in &mut daemons {
            exited(l, *n, child)?;
        }
        if start.elapsed() > START_TIMEOUT {
            anyhow::bail!(
                "timed out after {}s waiting for nodes to be ready: {}",
                START_TIMEOUT.as_secs(),
                waiting.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Fails if hN's daemon has exited, with the end of its log.
fn exited(l: &Layout, n: u32, child: &mut Child) -> anyhow::Result<()> {
    if let Ok(Some(status)) = child.try_wait() {
        anyhow::bail!(
            "h{n}'s daemon exited ({status}): {}",
            procs::tail(&l.daemon_log(n), 3)
        );
    }
    Ok(())
}

pub fn host_url(l: &Layout, n: u32) -> String {
    format!("unix://{}", l.socket(n).display())
}

/// Starts hN's daemon inside its namespace (used by `up`, `start` and `restart`).
pub fn start_daemon(l: &Layout, ledger: &Ledger, n: u32) -> anyhow::Result<Child> {
    let dir = l.host_dir(n);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let exe = std::env::current_exe().context("find the rswarm binary")?;
    let addr = Layout::cluster_addr(n);
    let args: Vec<std::ffi::OsString> = vec![
        "daemon".into(),
        "--data-dir".into(),
        l.data_dir(n).into(),
        "--socket".into(),
        l.socket(n).into(),
        "--listen-addr".into(),
        addr.clone().into(),
        "--advertise-addr".into(),
        addr.into(),
        "--hostname".into(),
        Layout::host_name(n).into(),
        "--containerd".into(),
        ledger.containerd_socket.clone().into(),
        "--containerd-namespace".into(),
        l.ctr_namespace(n).into(),
        "--insecure-registry".into(),
        Layout::registry_addr().into(),
    ];
    procs::spawn(
        Some(&l.host_ns(n)),
        &exe,
        &args,
        &l.daemon_log(n),
        &l.daemon_pid(n),
    )
}

/// Waits until hN's daemon answers on its socket.
pub async fn wait_socket(
    l: &Layout,
    n: u32,
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !runtime::answers(&l.socket(n)) {
        exited(l, n, child)?;
        if start.elapsed() > timeout {
            anyhow::bail!(
                "h{n}'s daemon did not answer on {} within {}s: see {}",
                l.socket(n).display(),
                timeout.as_secs(),
                l.daemon_log(n).display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// `writeln!` into a String (which cannot fail).
macro_rules! line {
    ($o:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($o, $($arg)*);
    }};
}

fn print_summary(l: &Layout, ledger: &Ledger, roles: &[String], took: Duration) {
    let mut o = String::new();
    let dir = l.dir.display();
    let workers = l.nodes - ledger.managers;
    line!(
        o,
        "Lab up in {:.1}s: {} hosts ({} manager{}, {} worker{}) in {dir}",
        took.as_secs_f64(),
        l.nodes,
        ledger.managers,
        if ledger.managers == 1 { "" } else { "s" },
        workers,
        if workers == 1 { "" } else { "s" },
    );
    o.push('\n');
    line!(
        o,
        "  switch      netns {} (bridge {}); this machine is 198.18.0.254 on link {}",
        l.switch_ns(),
        layout::BRIDGE,
        l.leg()
    );
    for n in l.hosts() {
        line!(
            o,
            "  {:<10}  {:<13} {:<8} netns {}, socket {}",
            Layout::host_name(n),
            Layout::host_ip(n),
            roles.get((n - 1) as usize).map_or("", |r| r.as_str()),
            l.host_ns(n),
            l.socket(n).display()
        );
    }
    line!(
        o,
        "  registry    {}  (plain HTTP; netns {}, storage {})",
        Layout::registry_addr(),
        l.registry_ns(),
        l.registry_dir().join("data").display()
    );
    line!(
        o,
        "  containerd  {} ({}), namespaces {}..h{}",
        ledger.containerd_socket.display(),
        if ledger.own_containerd {
            "started by the lab"
        } else {
            "the machine's"
        },
        l.ctr_namespace(1),
        l.nodes
    );
    o.push('\n');
    line!(o, "Use it:");
    if let Some(dir) = not_on_path() {
        line!(o, "  export PATH={}:$PATH", dir.display());
    }
    line!(
        o,
        "  eval \"$(rswarm lab env h1 --dir {dir})\"     # talk to h1's daemon"
    );
    line!(o, "  rswarm node ls");
    line!(
        o,
        "  skopeo copy --dest-tls-verify=false oci:LAYOUT:TAG docker://{}/NAME:TAG",
        Layout::registry_addr()
    );
    line!(
        o,
        "  rswarm service create --name web --replicas {} {}/NAME:TAG ...",
        l.nodes,
        Layout::registry_addr()
    );
    line!(
        o,
        "  rswarm lab status --dir {dir}      # hosts, daemons, roles"
    );
    line!(o, "  rswarm lab stop|start|restart h2 --dir {dir}");
    line!(o, "  rswarm lab down --dir {dir}        # remove it all");
    super::print(&o);
}

/// The dir of this `rswarm` binary, when `rswarm` on PATH is not this binary.
fn not_on_path() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("rswarm"))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok());
    if found.as_ref() == Some(&exe) {
        None
    } else {
        exe.parent().map(|d| d.to_path_buf())
    }
}
