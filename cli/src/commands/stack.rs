//! `rswarm stack ...`: stacks from Compose files. `stack config` needs no daemon.

use anyhow::Context;
use clap::{Args, Subcommand};
use rswarm_stack::{Env, Loaded, Source};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum StackCommand {
    /// Print the final Compose file, after merging the files and interpolating variables.
    Config(ConfigArgs),
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

pub async fn run(_host: &str, command: StackCommand) -> anyhow::Result<()> {
    match command {
        StackCommand::Config(a) => config(&a),
    }
}

fn config(a: &ConfigArgs) -> anyhow::Result<()> {
    let loaded = load(&a.compose_files)?;
    print!("{}", loaded.to_yaml()?);
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
