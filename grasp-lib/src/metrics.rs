//! Prometheus metrics, rendered as text at `/metrics` by the frontends.
//!
//! One registry per [`crate::Grasp`] instance (not the global default), so several servers
//! in one process (tests, embedding forges) keep separate counts.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::nip34::kinds;

/// All metrics of one server. Cheap to clone (the metric handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Open websocket connections.
    pub connections_active: IntGauge,
    /// Websocket connections accepted since start.
    pub connections_total: IntCounter,
    /// Client messages by type (`event`, `req`, `close`, `count`, `neg_open`, … `invalid`).
    pub messages_total: IntCounterVec,
    /// EVENTs received with a valid id and signature, by kind.
    pub events_received: IntCounterVec,
    /// Events written to the store, by kind.
    pub events_stored: IntCounterVec,
    /// Events refused, by kind and reason code.
    pub events_rejected: IntCounterVec,
    /// Events answered `OK true` but held back (purgatory), by kind.
    pub events_held: IntCounterVec,
    /// Live subscriptions closed because the client read too slowly.
    pub slow_subscriptions_closed: IntCounter,
    /// Time to answer a REQ's stored events, by outcome.
    pub req_duration: HistogramVec,
    /// Time to decide and store one EVENT.
    pub event_duration: Histogram,
    /// Git HTTP requests by service and result.
    pub git_requests: IntCounterVec,
    /// Git payload bytes by direction (`received` for pushes, `sent` for fetches).
    pub git_bytes: IntCounterVec,
    /// Push authorization decisions (`authorized`, `rejected`).
    pub push_authorizations: IntCounterVec,
    /// Time to serve a git request, by service.
    pub git_duration: HistogramVec,
    /// Repositories aligned to a state (refs or HEAD changed).
    pub repos_aligned: IntCounter,
    /// Bare repositories created for announcements.
    pub repos_created: IntCounter,
    /// Background repacks after pushes, by result.
    pub repacks: IntCounterVec,
    /// Events held in purgatory now, by type.
    pub purgatory_held: IntGaugeVec,
    /// `refs/nostr` placeholders waiting for their event now.
    pub purgatory_placeholders: IntGauge,
    /// Events released from purgatory (their git data arrived), by type.
    pub purgatory_released: IntCounterVec,
    /// Events dropped from purgatory because their git data never arrived, by type.
    pub purgatory_expired: IntCounterVec,
    /// Unmatched `refs/nostr` refs deleted after their deadline.
    pub purgatory_placeholders_expired: IntCounter,
    /// Local API requests (git hooks), by result.
    pub local_api_requests: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Metrics {
    /// A fresh registry with every metric registered at zero.
    pub fn new() -> Self {
        let registry = Registry::new();
        let connections_active =
            IntGauge::new("grasp_websocket_connections", "Open websocket connections").expect("valid metric");
        registry.register(Box::new(connections_active.clone())).expect("unique metric");
        let req_duration = HistogramVec::new(
            HistogramOpts::new("grasp_req_duration_seconds", "Time to send the stored events of a REQ")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["outcome"],
        )
        .expect("valid metric");
        registry.register(Box::new(req_duration.clone())).expect("unique metric");
        let event_duration = Histogram::with_opts(
            HistogramOpts::new("grasp_event_duration_seconds", "Time to decide about and store one EVENT")
                .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(event_duration.clone())).expect("unique metric");
        let git_duration = HistogramVec::new(
            HistogramOpts::new("grasp_git_request_duration_seconds", "Time to serve a git HTTP request")
                .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]),
            &["service"],
        )
        .expect("valid metric");
        registry.register(Box::new(git_duration.clone())).expect("unique metric");
        let purgatory_held = IntGaugeVec::new(
            Opts::new(
                "grasp_purgatory_held",
                "Events held in purgatory until their git data arrives, by type",
            ),
            &["type"],
        )
        .expect("valid metric");
        registry.register(Box::new(purgatory_held.clone())).expect("unique metric");
        let purgatory_placeholders = IntGauge::new(
            "grasp_purgatory_placeholders",
            "refs/nostr refs pushed before their pull request event",
        )
        .expect("valid metric");
        registry.register(Box::new(purgatory_placeholders.clone())).expect("unique metric");
        Self {
            purgatory_held,
            purgatory_placeholders,
            purgatory_released: counter_vec(
                &registry,
                "grasp_purgatory_released_total",
                "Events released from purgatory when their git data arrived, by type",
                &["type"],
            ),
            purgatory_expired: counter_vec(
                &registry,
                "grasp_purgatory_expired_total",
                "Events dropped from purgatory because their git data never arrived, by type",
                &["type"],
            ),
            purgatory_placeholders_expired: counter(
                &registry,
                "grasp_purgatory_placeholders_expired_total",
                "Unmatched refs/nostr refs deleted after their deadline",
            ),
            local_api_requests: counter_vec(
                &registry,
                "grasp_local_api_requests_total",
                "Local API requests (git hooks), by result",
                &["result"],
            ),
            git_requests: counter_vec(
                &registry,
                "grasp_git_requests_total",
                "Git HTTP requests by service and result",
                &["service", "result"],
            ),
            git_bytes: counter_vec(
                &registry,
                "grasp_git_bytes_total",
                "Git payload bytes by direction",
                &["direction"],
            ),
            push_authorizations: counter_vec(
                &registry,
                "grasp_push_authorizations_total",
                "Push authorization decisions",
                &["result"],
            ),
            repos_aligned: counter(
                &registry,
                "grasp_repos_aligned_total",
                "Repositories aligned to a state event",
            ),
            repos_created: counter(
                &registry,
                "grasp_repos_created_total",
                "Bare repositories created for announcements",
            ),
            repacks: counter_vec(
                &registry,
                "grasp_repo_repacks_total",
                "Background repacks after pushes, by result",
                &["result"],
            ),
            git_duration,
            connections_total: counter(
                &registry,
                "grasp_websocket_connections_total",
                "Websocket connections accepted",
            ),
            messages_total: counter_vec(
                &registry,
                "grasp_relay_messages_total",
                "Client messages by type",
                &["type"],
            ),
            events_received: counter_vec(
                &registry,
                "grasp_events_received_total",
                "EVENTs with a valid id and signature, by kind",
                &["kind"],
            ),
            events_stored: counter_vec(
                &registry,
                "grasp_events_stored_total",
                "Events stored, by kind",
                &["kind"],
            ),
            events_rejected: counter_vec(
                &registry,
                "grasp_events_rejected_total",
                "Events refused, by kind and reason",
                &["kind", "reason"],
            ),
            events_held: counter_vec(
                &registry,
                "grasp_events_held_total",
                "Events accepted but held until their git data arrives, by kind",
                &["kind"],
            ),
            slow_subscriptions_closed: counter(
                &registry,
                "grasp_slow_subscriptions_closed_total",
                "Live subscriptions closed because the client read too slowly",
            ),
            connections_active,
            req_duration,
            event_duration,
            registry,
        }
    }

    /// The registry, for frontends that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// The `kind` label: the number for kinds GRASP cares about, `other` for the rest, so a
/// client cannot blow up label cardinality.
pub fn kind_label(kind: u16) -> &'static str {
    match kind {
        0 => "0",
        1 => "1",
        3 => "3",
        kinds::DELETION => "5",
        7 => "7",
        16 => "16",
        kinds::COMMENT => "1111",
        kinds::PATCH => "1617",
        kinds::PULL_REQUEST => "1618",
        kinds::PULL_REQUEST_UPDATE => "1619",
        kinds::ISSUE => "1621",
        1630 => "1630",
        1631 => "1631",
        1632 => "1632",
        1633 => "1633",
        1985 => "1985",
        9735 => "9735",
        10002 => "10002",
        kinds::USER_GRASP_LIST => "10317",
        kinds::REPO_ANNOUNCEMENT => "30617",
        kinds::REPO_STATE => "30618",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let m = Metrics::new();
        m.events_rejected.with_label_values(&[kind_label(1621), "unrelated"]).inc();
        m.connections_active.inc();
        let text = m.render();
        assert!(text.contains("grasp_events_rejected_total{kind=\"1621\",reason=\"unrelated\"} 1"), "{text}");
        assert!(text.contains("grasp_websocket_connections 1"));
        assert_eq!(kind_label(4242), "other");
    }
}
