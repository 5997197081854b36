//! `grasp-server`: the single-binary GRASP server. The relay, NIP-11, git smart-HTTP and
//! `/metrics` share one port. This file only parses configuration and starts the listener;
//! every protocol rule lives in `grasp-lib`.

mod git_http;
mod http;
mod pages;
mod serve;
mod websocket;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use grasp_lib::config::{self, Config, ConfigArgs};
use grasp_lib::hunt::status::HuntStatus;
use grasp_lib::limits::{raise_nofile_limit, ServerLimits};
use grasp_lib::local_api::{self, LocalApiOptions};
use grasp_lib::purgatory::{listing, Purgatory};
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

/// `grasp-server purgatory list`: reads the journal of the configured data path.
fn list_purgatory(config: &Config, json: bool) -> ExitCode {
    let dir = Purgatory::directory(&config.relay_data_path);
    let (held, placeholders) = match Purgatory::read(&dir) {
        Ok(found) => found,
        Err(e) => return fail(format!("cannot read purgatory in {}: {e}", dir.display())),
    };
    // Written by the running server; absent when nothing was ever hunted.
    let hunt = HuntStatus::read(&HuntStatus::path(&config.relay_data_path)).unwrap_or_default();
    let entries = listing::listing(&held, &placeholders, &hunt);
    if json {
        println!("{}", serde_json::to_string_pretty(&entries).expect("listing serializes"));
    } else {
        print!("{}", listing::render_table(&entries));
    }
    ExitCode::SUCCESS
}

fn parse_cli() -> Result<Cli, clap::Error> {
    let argv = config::with_env_aliases(std::env::args_os(), |name| std::env::var(name).ok());
    let matches = config::annotate_help(Cli::command()).try_get_matches_from(argv)?;
    Cli::from_arg_matches(&matches)
}

/// Bad configuration ends the process with one line on stderr and exit code 2.
fn fail(reason: impl std::fmt::Display) -> ExitCode {
    eprintln!("grasp-server: {reason}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let line = e.to_string();
            let first = line.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            return fail(format!("{first} (see --help)"));
        }
    };
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    if let Some(Command::Purgatory { action: PurgatoryAction::List { json } }) = cli.command {
        return list_purgatory(&config, json);
    }
    grasp_lib::logging::init(&config.log_level);
    // Test hook: FAILPOINTS=<name>=<actions> makes the server crash at named points (see
    // docs/explanation/limits.md); unset in production, where every point is a no-op.
    let _failpoints = fail::FailScenario::setup();
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{e:#}")),
    }
}

async fn run(mut config: Config) -> anyhow::Result<()> {
    let listener = listen(config.bind_address)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.bind_address))?;
    let bound = listener.local_addr()?;
    if config.domain.is_none() {
        config.domain = Some(bound.to_string());
    }
    let nofile = raise_nofile_limit();
    match nofile {
        Some(limit) => tracing::info!(
            soft_before = limit.soft_before,
            soft = limit.soft,
            hard = limit.hard,
            "open-file limit (soft limit raised to the hard limit)"
        ),
        None => tracing::warn!("could not read the open-file limit"),
    }
    let limits = ServerLimits::from_config(&config, nofile.map(|l| l.soft));
    let grasp = Grasp::open(config).await?;
    grasp.metrics().set_build_info(env!("CARGO_PKG_VERSION"), env!("GRASP_BUILD_COMMIT"));
    // Git hooks (grasp-hook) on this machine ask the node through this socket; it is
    // removed when `_local_api` drops at shutdown.
    let _local_api = match LocalApiOptions::from_config(grasp.config()) {
        Some(options) => Some(local_api::serve(grasp.clone(), options).await?),
        None => None,
    };
    tracing::info!(
        address = %bound,
        domain = %grasp.origin().authority(),
        backend = ?grasp.config().database_backend,
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        "grasp-server listening"
    );
    tokio::spawn(reload_curation_on_sighup(grasp.clone()));
    // Test harnesses and scripts wait for this exact line to learn the port.
    println!("grasp-server listening on http://{bound}");
    serve::serve(listener, grasp, limits, shutdown_signal()).await;
    tracing::info!("grasp-server stopped");
    Ok(())
}

/// Binds the listener with TCP_NODELAY, which accepted connections inherit on Linux. Git's
/// smart-HTTP exchanges are request/response ping-pong with small messages; with Nagle's
/// algorithm each small write can wait for a delayed ACK (tens of ms per round trip).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// `SIGHUP` re-reads the curation file (the lists also follow file changes on their own).
async fn reload_curation_on_sighup(grasp: Grasp) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; the curation file is still re-read when it changes");
            return;
        };
        while hangups.recv().await.is_some() {
            grasp.reload_curation().await;
        }
    }
    #[cfg(not(unix))]
    let _ = grasp;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
