//! What a frontend binary's `main` does with its command line: configuration flags with the
//! ngit-grasp environment aliases and defaults in `--help` ([`crate::config`]), and failures
//! reported as one line on stderr with exit code 2.
//!
//! ```no_run
//! use clap::Parser;
//! use grasp_lib::config::ConfigArgs;
//!
//! /// My GRASP frontend.
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     config: ConfigArgs,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let cli: Cli = match grasp_lib::cli::parse("my-frontend", &[]) {
//!         Ok(cli) => cli,
//!         Err(exit) => return exit, // --help, --version, or a bad flag (already reported)
//!     };
//!     match grasp_lib::config::Config::load(&cli.config) {
//!         Ok(_config) => std::process::ExitCode::SUCCESS,
//!         Err(e) => grasp_lib::cli::fail("my-frontend", e),
//!     }
//! }
//! ```

use std::fmt::Display;
use std::process::ExitCode;

use clap::Parser;

use crate::config;

/// Parses the process's arguments (and `GRASP_*` / `NGIT_*` environment) into `C`, with
/// `hidden` configuration options left out of `--help`. `Err` carries the exit code once
/// help or version was printed (success) or the error was reported as one line (2).
pub fn parse<C: Parser>(binary: &str, hidden: &'static [&'static str]) -> Result<C, ExitCode> {
    let argv = config::with_env_aliases(std::env::args_os(), |name| std::env::var(name).ok());
    let cmd = config::hide_options(config::annotate_help(C::command()), hidden);
    match cmd.try_get_matches_from(argv).and_then(|matches| C::from_arg_matches(&matches)) {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            Err(fail(binary, format!("{first} (see --help)")))
        }
    }
}

/// Reports why the program cannot run as one line on stderr; exit code 2.
pub fn fail(binary: &str, reason: impl Display) -> ExitCode {
    eprintln!("{binary}: {reason}");
    ExitCode::from(2)
}

/// `migrate`: applies pending PostgreSQL schema migrations of the configured database and
/// exits (servers apply them at start too; this is for operators who want the step
/// explicit). Prints what it did on stdout; failures as [`fail`] does.
pub async fn migrate(binary: &str, config: &config::Config) -> ExitCode {
    if let Err(e) = config.validate() {
        return fail(binary, e);
    }
    let Some((url, pool_size)) = config.postgres() else {
        return fail(
            binary,
            format!(
                "migrate: the schema migrations are PostgreSQL's, but database_backend is {} (set database_backend = \"postgres\" and database_url)",
                config.database_backend.as_str()
            ),
        );
    };
    let store = match crate::store::postgres::PostgresDatabase::connect(url, pool_size.min(2)).await {
        Ok(store) => store,
        Err(e) => return fail(binary, format!("migrate: {e}")),
    };
    match store.migrate().await {
        Ok(applied) if applied.is_empty() => {
            println!(
                "{}: schema is up to date (version {})",
                store.target(),
                crate::store::postgres::schema::latest_version()
            );
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            let versions: Vec<String> = applied.iter().map(|v| v.to_string()).collect();
            println!("{}: applied schema migrations {}", store.target(), versions.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => fail(binary, format!("migrate: {e}")),
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM): the moment a frontend
/// stops accepting connections.
pub async fn shutdown_signal() {
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

/// Re-reads the curation file on every `SIGHUP` (the lists also follow file changes on
/// their own); runs until the process ends.
pub async fn reload_curation_on_sighup(grasp: crate::Grasp) {
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

/// What runs next to every frontend's listener once [`crate::Grasp`] is open: the build
/// info metric, the local API that `grasp-hook` asks (when configured) and the curation
/// reload on `SIGHUP`. Keep the returned server for as long as the process serves: its
/// socket is removed when it drops.
pub async fn start_node_services(
    grasp: &crate::Grasp,
    version: &str,
    commit: &str,
) -> Result<NodeServices, NodeServicesError> {
    grasp.metrics().set_build_info(version, commit);
    let local_api = match crate::local_api::LocalApiOptions::from_config(grasp.config()) {
        Some(options) => Some(crate::local_api::serve(grasp.clone(), options).await?),
        None => None,
    };
    if let Some(address) = grasp.config().metrics_bind_address {
        let bound = crate::web::metrics_listener::serve(grasp.clone(), address)
            .await
            .map_err(|error| NodeServicesError::Metrics { address, error })?;
        tracing::info!(address = %bound, "/metrics served on its own listener");
    }
    tokio::spawn(reload_curation_on_sighup(grasp.clone()));
    Ok(NodeServices { _local_api: local_api })
}

/// What [`start_node_services`] started that must live as long as the process serves.
#[derive(Debug)]
pub struct NodeServices {
    _local_api: Option<crate::local_api::LocalApiServer>,
}

/// Why the node services could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeServicesError {
    /// The local API socket.
    #[error(transparent)]
    LocalApi(#[from] crate::local_api::ServeError),
    /// The metrics listener.
    #[error("cannot listen for /metrics on {address}: {error}")]
    Metrics {
        /// `metrics_bind_address`.
        address: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}
