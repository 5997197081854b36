//! Log output for every frontend: `tracing` to stderr, filtered by `log_level`.

/// The relay client library relay sync uses logs every connection and reconciliation at
/// INFO; sync reports what an operator needs itself. Unless `log_level` names it, the
/// library logs warnings only.
const QUIET_LIBRARIES: &str = "nostr_relay_pool=warn";

/// Installs the global subscriber. Call once, early in `main`; later calls are ignored.
/// With `node` (a node of a cluster), every line starts with the node's id.
pub fn init(log_level: &str, node: Option<&'static str>) {
    let directives = if log_level.contains("nostr_relay_pool") {
        log_level.to_owned()
    } else {
        format!("{log_level},{QUIET_LIBRARIES}")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = NodeFormat { node, inner: tracing_subscriber::fmt::format() };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .event_format(format)
        .try_init();
}

/// The default line format, with the node id in front when there is one.
struct NodeFormat<F> {
    node: Option<&'static str>,
    inner: F,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for NodeFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if let Some(node) = self.node {
            write!(writer, "node={node} ")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}
