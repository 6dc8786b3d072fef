//! init, join, join-token, leave.

use crate::client;
use clap::Args;
use rswarm_proto::model::parse_duration;
use rswarm_proto::pb;

#[derive(Args)]
pub struct InitArgs {
    /// IP[:PORT] other nodes use to reach this one.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// IP:PORT for the cluster port.
    #[arg(long)]
    listen_addr: Option<String>,
    /// How often nodes heartbeat; a node is down after 3 missed beats.
    #[arg(long, default_value = "5s")]
    dispatcher_heartbeat: String,
    /// Lifetime of node certificates.
    #[arg(long, default_value = "2160h")]
    cert_expiry: String,
    /// Recover from lost quorum on a surviving manager, keeping the state.
    #[arg(long)]
    force_new_cluster: bool,
}

#[derive(Args)]
pub struct JoinArgs {
    /// The join token (from `rswarm join-token`).
    #[arg(long)]
    token: String,
    #[arg(long)]
    advertise_addr: Option<String>,
    #[arg(long)]
    listen_addr: Option<String>,
    /// A manager's HOST:PORT.
    remote: String,
}

#[derive(Args)]
pub struct JoinTokenArgs {
    /// worker or manager
    #[arg(value_parser = ["worker", "manager"])]
    role: String,
    /// Print the token only.
    #[arg(short, long)]
    quiet: bool,
    /// Replace the token; the old one stops working at once.
    #[arg(long)]
    rotate: bool,
}

#[derive(Args)]
pub struct LeaveArgs {
    /// Leave even if this loses the managers' quorum.
    #[arg(short, long)]
    force: bool,
}

pub async fn init(host: &str, a: InitArgs) -> anyhow::Result<()> {
    let heartbeat = parse_duration(&a.dispatcher_heartbeat)?;
    if heartbeat.as_millis() < 100 {
        anyhow::bail!("--dispatcher-heartbeat must be at least 100ms");
    }
    let expiry = parse_duration(&a.cert_expiry)?;
    let mut c = client::connect(host).await?;
    let resp = c
        .init(pb::InitRequest {
            advertise_addr: a.advertise_addr.unwrap_or_default(),
            listen_addr: a.listen_addr.unwrap_or_default(),
            dispatcher_heartbeat_ms: heartbeat.as_millis() as u64,
            cert_expiry_secs: expiry.as_secs(),
            force_new_cluster: a.force_new_cluster,
        })
        .await?
        .into_inner();
    let token = c
        .get_join_token(pb::GetJoinTokenRequest {
            role: "worker".into(),
            rotate: false,
        })
        .await?
        .into_inner();
    println!(
        "Swarm initialized: current node ({}) is now a manager.\n",
        resp.node_id
    );
    println!("To add a worker to this swarm, run the following command:\n");
    println!(
        "    rswarm join --token {} {}\n",
        token.token, token.manager_addr
    );
    println!("To add a manager to this swarm, run 'rswarm join-token manager' and follow the instructions.");
    Ok(())
}

pub async fn join(host: &str, a: JoinArgs) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    let resp = c
        .join(pb::JoinRequest {
            token: a.token,
            remote_addr: a.remote,
            advertise_addr: a.advertise_addr.unwrap_or_default(),
            listen_addr: a.listen_addr.unwrap_or_default(),
        })
        .await?
        .into_inner();
    println!("This node joined a swarm as a {}.", resp.role);
    Ok(())
}

pub async fn join_token(host: &str, a: JoinTokenArgs) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    let t = c
        .get_join_token(pb::GetJoinTokenRequest {
            role: a.role.clone(),
            rotate: a.rotate,
        })
        .await?
        .into_inner();
    if a.quiet {
        println!("{}", t.token);
        return Ok(());
    }
    if a.rotate {
        println!("Successfully rotated {} join token.\n", a.role);
    }
    println!(
        "To add a {} to this swarm, run the following command:\n",
        a.role
    );
    println!("    rswarm join --token {} {}", t.token, t.manager_addr);
    Ok(())
}

pub async fn leave(host: &str, a: LeaveArgs) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    c.leave(pb::LeaveRequest { force: a.force }).await?;
    println!("Node left the swarm.");
    Ok(())
}
