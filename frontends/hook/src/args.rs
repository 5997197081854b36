//! What the hooks are told on their command line: how to reach the node, and which
//! repository git runs them in.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::repository::RepositoryArgs;

/// How to reach the node.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The node's local API socket (its local_api_socket)
    #[arg(long, env = "GRASP_HOOK_SOCKET")]
    pub socket: PathBuf,
    /// Seconds to wait for the node's answer; no answer refuses the push
    #[arg(long, env = "GRASP_HOOK_TIMEOUT_SECS", default_value_t = 30)]
    pub timeout_secs: u64,
}

impl NodeArgs {
    pub fn client(&self) -> grasp_lib::local_api::LocalApiClient {
        grasp_lib::local_api::LocalApiClient::new(&self.socket, Duration::from_secs(self.timeout_secs.max(1)))
    }
}

/// Arguments of the two hooks.
#[derive(Debug, Clone, Args)]
pub struct HookArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub repository: RepositoryArgs,
    /// Another hook to run with the same input (the one that was installed before us)
    #[arg(long)]
    pub chain: Option<PathBuf>,
}
