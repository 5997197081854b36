//! `grasp-hook`: GRASP push authorization for git servers we do not run (`git daemon`,
//! `git http-backend`, ssh, Gitea, Forgejo). Installed as a repository's `pre-receive` and
//! `post-receive` hook, it asks the running grasp node over its local API
//! (`grasp_lib::local_api`) and turns the answer into an exit code and `remote:` lines.
//! Every decision is the node's; this binary only reads stdin and the environment, finds
//! out which repository git runs it in, and installs itself.

mod args;
mod hooks;
mod install;
mod repository;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use args::{HookArgs, NodeArgs};

/// GRASP hooks for existing git servers: pushes are accepted only when they match a signed
/// Nostr state event, decided by the running grasp node.
#[derive(Debug, Parser)]
#[command(name = "grasp-hook", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run as git's pre-receive hook: refuse the push unless the node authorizes it
    PreReceive(HookArgs),
    /// Run as git's post-receive hook: let the node release and align what the push allows
    PostReceive(HookArgs),
    /// Install the hooks into a repository, every repository under a root, or a hooks directory
    Install(install::InstallArgs),
    /// Check that the node answers on its local API socket
    Ping {
        #[command(flatten)]
        node: NodeArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::PreReceive(args) => hooks::pre_receive(&args),
        Command::PostReceive(args) => hooks::post_receive(&args),
        Command::Install(args) => install::run(&args),
        Command::Ping { node } => match node.client().ping() {
            Ok(version) => {
                println!("the GRASP node at {} answers (grasp-lib {version})", node.socket.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("grasp-hook: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
