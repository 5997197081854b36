//! `grasp-hook`: GRASP push authorization for git servers we do not run (`git daemon`,
//! `git http-backend`, ssh, Gitea, Forgejo). Installed as a repository's `pre-receive` and
//! `post-receive` hook, it asks the running grasp node over its local API
//! (`grasp_lib::local_api`) and turns the answer into an exit code and `remote:` lines.
//! Every decision is the node's; this binary only reads stdin and the environment, finds
//! out which repository git runs it in, and installs itself.

mod hooks;
mod install;
mod repository;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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

/// How to reach the node.
#[derive(Debug, Clone, Args)]
struct NodeArgs {
    /// The node's local API socket (its local_api_socket)
    #[arg(long, env = "GRASP_HOOK_SOCKET")]
    socket: PathBuf,
    /// Seconds to wait for the node's answer; no answer refuses the push
    #[arg(long, env = "GRASP_HOOK_TIMEOUT_SECS", default_value_t = 30)]
    timeout_secs: u64,
}

impl NodeArgs {
    fn client(&self) -> grasp_lib::local_api::LocalApiClient {
        grasp_lib::local_api::LocalApiClient::new(&self.socket, Duration::from_secs(self.timeout_secs.max(1)))
    }
}

/// Arguments of the two hooks.
#[derive(Debug, Clone, Args)]
struct HookArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    repository: repository::RepositoryArgs,
    /// Another hook to run with the same input (the one that was installed before us)
    #[arg(long)]
    chain: Option<PathBuf>,
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
