//! `rswarm`: the node daemon (`rswarm daemon`) and the command-line client for it.

mod client;
mod commands;
mod daemon;
mod lab;
mod output;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rswarm",
    version,
    about = "A Swarm-mode container orchestrator"
)]
struct Cli {
    /// Daemon socket to connect to (unix:///path).
    #[arg(short = 'H', long = "host", env = "RSWARM_HOST", global = true, default_value = client::DEFAULT_HOST)]
    host: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node daemon.
    Daemon(commands::daemon::DaemonArgs),
    /// Create a new cluster with this node as its first manager.
    Init(commands::swarm::InitArgs),
    /// Join a cluster as a worker or manager.
    Join(commands::swarm::JoinArgs),
    /// Show or rotate the join tokens.
    JoinToken(commands::swarm::JoinTokenArgs),
    /// Leave the cluster.
    Leave(commands::swarm::LeaveArgs),
    /// Manage nodes.
    #[command(subcommand)]
    Node(commands::node::NodeCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(commands::service::ServiceCommand),
    /// Manage overlay networks.
    #[command(subcommand)]
    Network(commands::network::NetworkCommand),
    /// Manage secrets (stored encrypted, mounted into tasks on a tmpfs).
    #[command(subcommand)]
    Secret(commands::secret::SecretCommand),
    /// Manage configs (mounted into tasks as files).
    #[command(subcommand)]
    Config(commands::secret::SecretCommand),
    /// Manage stacks: services, networks, secrets and configs from Compose files.
    #[command(subcommand)]
    Stack(commands::stack::StackCommand),
    /// Run a command in a task's container, on whatever node it runs.
    Exec(commands::exec::ExecArgs),
    /// A rack on this machine: hosts in network namespaces, a registry, a cluster.
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

/// Bad usage, as sysexits' EX_USAGE.
const EX_USAGE: u8 = 64;

/// The mode in which containerd's shim runs this binary to write a container's logs
/// (`rswarm log-writer FILE`, stdout and stderr on fds 3 and 4).
pub const LOG_WRITER_MODE: &str = "log-writer";

fn main() -> ExitCode {
    // The shim's log writer: no runtime, no argument parsing beyond the file.
    let mut argv = std::env::args_os().skip(1);
    if argv.next().as_deref() == Some(std::ffi::OsStr::new(LOG_WRITER_MODE)) {
        let Some(path) = argv.next() else {
            eprintln!("Error: log-writer needs the log file");
            return ExitCode::from(EX_USAGE);
        };
        return match rswarm_worker::containerd::run_log_writer(std::path::Path::new(&path)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: log-writer: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    // One line, as for every other error; `--help` has the details.
                    let text = e.render().to_string();
                    let first = text.lines().next().unwrap_or("invalid usage");
                    eprintln!("Error: {}", first.trim_start_matches("error: "));
                    ExitCode::from(EX_USAGE)
                }
            };
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Exec(a) = cli.command {
        // The command's exit code is ours.
        return match rt.block_on(commands::exec::run(&cli.host, a)) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("Error: {}", client::error_line(&e));
                ExitCode::FAILURE
            }
        };
    }
    let result = rt.block_on(async move {
        match cli.command {
            Command::Exec(_) => Ok(()),
            Command::Daemon(a) => commands::daemon::run(a).await,
            Command::Init(a) => commands::swarm::init(&cli.host, a).await,
            Command::Join(a) => commands::swarm::join(&cli.host, a).await,
            Command::JoinToken(a) => commands::swarm::join_token(&cli.host, a).await,
            Command::Leave(a) => commands::swarm::leave(&cli.host, a).await,
            Command::Node(c) => commands::node::run(&cli.host, c).await,
            Command::Service(c) => commands::service::run(&cli.host, c).await,
            Command::Network(c) => commands::network::run(&cli.host, c).await,
            Command::Secret(c) => {
                commands::secret::run(&cli.host, commands::secret::Kind::Secret, c).await
            }
            Command::Config(c) => {
                commands::secret::run(&cli.host, commands::secret::Kind::Config, c).await
            }
            Command::Stack(c) => commands::stack::run(&cli.host, c).await,
            Command::Lab(c) => lab::run(c).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", client::error_line(&e));
            if e.chain()
                .any(|c| c.downcast_ref::<commands::daemon::UsageError>().is_some())
            {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
