//! Log output for every frontend: `tracing` to stderr, filtered by `log_level`.

/// The relay client library relay sync uses logs every connection and reconciliation at
/// INFO; sync reports what an operator needs itself. Unless `log_level` names it, the
/// library logs warnings only.
const QUIET_LIBRARIES: &str = "nostr_relay_pool=warn";

/// Installs the global subscriber. Call once, early in `main`; later calls are ignored.
pub fn init(log_level: &str) {
    let directives = if log_level.contains("nostr_relay_pool") {
        log_level.to_owned()
    } else {
        format!("{log_level},{QUIET_LIBRARIES}")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
