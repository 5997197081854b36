//! `grasp-server`: the single-binary GRASP server. The relay, NIP-11, git smart-HTTP and
//! `/metrics` share one port. This file only parses configuration and starts the listener;
//! every protocol rule lives in `grasp-lib`.

mod git_http;
mod http;
mod serve;
mod warp_glue;
mod websocket;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use grasp_lib::config::{self, Config, ConfigArgs};
use grasp_lib::purgatory::listing;
use grasp_lib::web::test_listener;
use grasp_lib::Grasp;

/// A GRASP server: a Nostr relay and git smart-HTTP host whose push permission comes from
/// signed Nostr state events. Without a command it serves.
#[derive(Debug, Parser)]
#[command(name = "grasp-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect events held until their git data arrives
    Purgatory {
        #[command(subcommand)]
        action: PurgatoryAction,
    },
    /// Apply pending PostgreSQL schema migrations (database_backend = "postgres") and exit;
    /// the server also applies them at start
    Migrate,
}

#[derive(Debug, Subcommand)]
enum PurgatoryAction {
    /// List what is held, what would release it, and when the server next looks for its git
    /// data elsewhere (safe while the server runs)
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// `grasp-server purgatory list`: reads the journal of the configured data path (or the
/// purgatory shared in PostgreSQL).
async fn list_purgatory(config: &Config, json: bool) -> ExitCode {
    let entries = match listing::read_configured(config).await {
        Ok(entries) => entries,
        Err(e) => return fail(e),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&entries).expect("listing serializes"));
    } else {
        print!("{}", listing::render_table(&entries));
    }
    ExitCode::SUCCESS
}

/// Bad configuration ends the process with one line on stderr and exit code 2.
fn fail(reason: impl std::fmt::Display) -> ExitCode {
    grasp_lib::cli::fail("grasp-server", reason)
}

fn main() -> ExitCode {
    // upload-pack runs this binary as its pack-objects (the pack cache), once per fetch.
    if let Some(exit) = grasp_lib::git::pack_cache::hook::run_if_invoked() {
        return exit;
    }
    // While the process has one thread: git children join the guard's process group.
    grasp_lib::git::start_child_guard();
    serve()
}

#[tokio::main]
async fn serve() -> ExitCode {
    // ngit's test harness asks before anything else runs (grasp_lib::web::test_listener).
    if test_listener::is_probe() {
        println!("{}", test_listener::PROBE_ANSWER);
        return ExitCode::SUCCESS;
    }
    // The proxy's own options parse (one config file can serve both) but are not listed.
    let cli: Cli = match grasp_lib::cli::parse("grasp-server", config::PROXY_OPTIONS) {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    let mut config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    // This binary answers `pack-objects-hook`, so it can serve the pack cache.
    config.pack_objects_hook = std::env::current_exe().ok();
    match cli.command {
        Some(Command::Purgatory { action: PurgatoryAction::List { json } }) => {
            return list_purgatory(&config, json).await
        }
        Some(Command::Migrate) => return grasp_lib::cli::migrate("grasp-server", &config).await,
        None => {}
    }
    grasp_lib::logging::init(&config.log_level, config.cluster_node_id());
    // Test hook: FAILPOINTS=<name>=<actions> makes the server crash at named points (see
    // docs/explanation/limits.md); unset in production, where every point is a no-op.
    let _failpoints = fail::FailScenario::setup();
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{e:#}")),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let inherited = test_listener::inherited(config.test_mode)?;
    let (grasp, listener, limits) = Grasp::open_listening_on(config, inherited).await?;
    let bound = listener.local_addr()?;
    // Build info, the local API for grasp-hook (its socket goes when `_local_api` drops at
    // shutdown) and curation reload on SIGHUP.
    let _local_api =
        grasp_lib::cli::start_node_services(&grasp, env!("CARGO_PKG_VERSION"), env!("GRASP_BUILD_COMMIT"))
            .await?;
    tracing::info!(
        address = %bound,
        domain = %grasp.origin().authority(),
        backend = ?grasp.config().database_backend,
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        "grasp-server listening"
    );
    // Test harnesses and scripts wait for this exact line to learn the port.
    println!("grasp-server listening on http://{bound}");
    serve::serve(listener, grasp, limits, grasp_lib::cli::shutdown_signal()).await;
    tracing::info!("grasp-server stopped");
    Ok(())
}
