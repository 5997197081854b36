//! `grasp-proxy`: GRASP in front of a stock git server. One listener (HTTP, or HTTPS and WSS
//! with rustls): the Nostr relay, NIP-11, the pages and `/metrics` are served in this
//! process by `grasp-lib`; git requests under `/<npub>/<identifier>.git` are forwarded by
//! pingora to the configured upstream (nginx + fcgiwrap + `git http-backend`), pushes only
//! after `grasp-lib` authorized them. This file parses the configuration and starts the
//! listener; `docs/explanation/proxy.md` explains the design.

mod app;
mod cached_fetch;
mod client;
mod in_process;
mod listener;
mod meter;
mod proxy;
mod push;
mod relay;
mod respond;
mod upstream;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use grasp_lib::config::{Config, ConfigArgs};
use grasp_lib::limits::Admission;
use grasp_lib::Grasp;

use crate::app::GraspProxy;
use crate::upstream::Upstream;

/// GRASP in front of an existing git server: serves the Nostr relay and NIP-11, authorizes
/// pushes against signed Nostr state events, and forwards git smart-HTTP to the upstream
/// (nginx + git http-backend).
#[derive(Debug, Parser)]
#[command(name = "grasp-proxy", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the `uploadpack.packObjectsHook` value that makes the upstream's git
    /// http-backend use this proxy's pack cache (for GIT_CONFIG_VALUE_0 in nginx)
    PackCacheHook,
}

/// Bad configuration ends the process with one line on stderr and exit code 2.
fn fail(reason: impl std::fmt::Display) -> ExitCode {
    grasp_lib::cli::fail("grasp-proxy", reason)
}

fn main() -> ExitCode {
    // upload-pack runs this binary as its pack-objects (the pack cache), once per fetch.
    if let Some(exit) = grasp_lib::git::pack_cache::hook::run_if_invoked() {
        return exit;
    }
    serve()
}

#[tokio::main]
async fn serve() -> ExitCode {
    let cli: Cli = match grasp_lib::cli::parse("grasp-proxy", &[]) {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    let mut config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    // This binary answers `pack-objects-hook`, so it can serve the pack cache.
    config.pack_objects_hook = std::env::current_exe().ok();
    if let Some(Command::PackCacheHook) = cli.command {
        return match config.pack_objects_hook_command() {
            Some(hook) => {
                println!("{hook}");
                ExitCode::SUCCESS
            }
            None => fail("the pack cache is off (pack_cache = false)"),
        };
    }
    let upstream = match Upstream::from_config(&config) {
        Ok(upstream) => upstream,
        Err(e) => return fail(format!("bad configuration: upstream: {e}")),
    };
    let tls = match listener::tls_acceptor(&config) {
        Ok(tls) => tls,
        Err(e) => return fail(format!("bad configuration: tls_certificate_path: {e}")),
    };
    grasp_lib::logging::init(&config.log_level, config.cluster_node_id());
    match run(config, upstream, tls).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{e:#}")),
    }
}

async fn run(config: Config, upstream: Upstream, tls: Option<listener::Tls>) -> anyhow::Result<()> {
    let (grasp, tcp, limits) = Grasp::open_listening(config).await?;
    let bound = tcp.local_addr()?;
    // Build info, the local API for grasp-hook (its socket goes when `_local_api` drops at
    // shutdown) and curation reload on SIGHUP.
    let _local_api =
        grasp_lib::cli::start_node_services(&grasp, env!("CARGO_PKG_VERSION"), env!("GRASP_BUILD_COMMIT"))
            .await?;
    // The upstream reads each repository's own config: bring it up to date.
    grasp.hosting().configure_all_for_serving().await;
    tracing::info!(
        address = %bound,
        domain = %grasp.origin().authority(),
        upstream = %upstream,
        tls = tls.is_some(),
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        "grasp-proxy listening"
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Test harnesses and scripts wait for this exact line to learn the port.
    println!("grasp-proxy listening on {scheme}://{bound}");
    let metrics = grasp.metrics().clone();
    let admission = Admission::new(limits.max_connections, limits.max_connections_per_ip, metrics.clone());
    let app = Arc::new(proxy::http_app(GraspProxy::new(grasp, upstream, limits.clone(), admission.clone())));
    listener::serve(tcp, tls, app, &limits, admission, metrics, grasp_lib::cli::shutdown_signal()).await;
    tracing::info!("grasp-proxy stopped");
    Ok(())
}
