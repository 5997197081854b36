//! Prometheus metrics, rendered as text at `/metrics` by the frontends.
//!
//! Where ngit-grasp already has a metric for the same thing, the name, type and labels are
//! ngit-grasp's (`ngit_*`), so operators keep their dashboards and alerts when they switch.
//! What ngit-grasp has no name for (purgatory, repository housekeeping, relay internals)
//! uses `grasp_*`. Every label has a bounded set of values: kinds outside a fixed list fold
//! into `other`, reasons are the fixed rejection codes, and per-repository series exist only
//! for the [`TOP_REPOS`] busiest repositories. `docs/reference/metrics.md` lists them all.
//!
//! One registry per [`crate::Grasp`] instance (not the global default), so several servers
//! in one process (tests, embedding forges) keep separate counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::nip34::kinds;

/// Repositories that get their own `ngit_git_top_repos_bytes` series.
pub const TOP_REPOS: usize = 10;

/// Git bytes per repository since start. Only repositories that exist get traffic, so the
/// map is bounded by the hosted repositories; only the top [`TOP_REPOS`] become series.
#[derive(Debug, Clone, Default)]
struct RepoTraffic(Arc<Mutex<HashMap<String, u64>>>);

impl RepoTraffic {
    fn add(&self, repo: &str, bytes: u64) {
        let mut map = self.0.lock().expect("repo traffic poisoned");
        *map.entry(repo.to_owned()).or_default() += bytes;
    }

    /// The `n` repositories with the most bytes, busiest first (ties by name).
    fn top(&self, n: usize) -> Vec<(String, u64)> {
        let map = self.0.lock().expect("repo traffic poisoned");
        let mut all: Vec<(String, u64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// All metrics of one server. Cheap to clone (the metric handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    started: Instant,
    /// `ngit_build_info{version, commit}`: constant 1.
    build_info: IntGaugeVec,
    /// Seconds since start, set when rendered.
    uptime: Gauge,
    /// Websocket connections accepted since start.
    pub connections_total: IntCounter,
    /// Open websocket connections.
    pub connections_active: IntGauge,
    /// How long websocket connections stayed open.
    pub connection_duration: Histogram,
    /// Client messages by type (`EVENT`, `REQ`, `CLOSE`, … `INVALID`).
    pub messages_received: IntCounterVec,
    /// Relay messages by type (`EVENT`, `EOSE`, `OK`, `NOTICE`, …).
    pub messages_sent: IntCounterVec,
    /// Distinct client IPs with an open websocket connection.
    pub unique_ips: IntGauge,
    /// Client IPs holding more open connections than the abuse threshold.
    pub flagged_abusers: IntGauge,
    /// EVENTs received, by kind.
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
    /// Git operations (`clone`, `fetch`, `push`) by status.
    pub git_operations: IntCounterVec,
    /// How long git operations took.
    pub git_operation_duration: Histogram,
    /// Git smart-HTTP body bytes by direction (`in`, `out`).
    pub git_bytes: IntCounterVec,
    /// Push authorization decisions (`accepted`, `rejected`).
    pub push_authorizations: IntCounterVec,
    /// Ref advertisements (`info_refs`, `ls_refs`) by who made them (`grasp`, `git`).
    pub git_advertisements: IntCounterVec,
    /// Bytes of the busiest repositories, refreshed when rendered.
    top_repos_bytes: IntGaugeVec,
    /// Git traffic per repository, the source of `top_repos_bytes`.
    repo_traffic: RepoTraffic,
    /// Bare repositories on disk.
    pub repositories: IntGauge,
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
    /// Events not held because a purgatory cap was full, by cap.
    pub purgatory_refused: IntCounterVec,
    /// Pushes refused by an abuse bound, by bound.
    pub push_refused: IntCounterVec,
    /// 1, labelled with this node's id (which node of a cluster a scrape came from).
    pub node_info: IntGaugeVec,
    /// Git requests refused because no git process slot was free, by cap.
    pub git_busy: IntCounterVec,
    /// Local API requests (git hooks), by result.
    pub local_api_requests: IntCounterVec,
    /// Open client connections (HTTP and websocket) counted by the connection caps.
    pub connections_open: IntGauge,
    /// Bytes the LMDB event store uses (its data file).
    pub store_used: IntGauge,
    /// Bytes the LMDB event store may grow to (`lmdb_map_size`).
    pub store_map_size: IntGauge,
    /// Connections refused by a cap, by cap (`total`, `per_ip`).
    pub connections_refused: IntCounterVec,
    /// Clients cut off for stalling, by what stalled (`header_read`, `body_idle`,
    /// `response_idle`, `websocket_silent`, `websocket_write`).
    pub timeouts: IntCounterVec,
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

/// Registers `metric` (names are fixed in this file, so failures are programming errors).
fn register<C: Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<C>) -> C {
    let metric = metric.expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("unique metric");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(registry, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())))
}

/// Seconds, for durations from a millisecond request to a multi-gigabyte clone.
const GIT_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Seconds, for websocket connections from a probe to a client open all day.
const CONNECTION_BUCKETS: &[f64] =
    &[0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 24.0 * 3600.0];

/// What a client cut off for stalling stalled on: the `stalled` label values.
pub const STALLED: [&str; 5] =
    ["header_read", "body_idle", "response_idle", "websocket_silent", "websocket_write"];

impl Metrics {
    /// A fresh registry with every metric registered at zero.
    pub fn new() -> Self {
        let r = Registry::new();
        let build_info = gauge_vec(
            &r,
            "ngit_build_info",
            "Always 1; the labels say which build is running",
            &["version", "commit"],
        );
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), "unknown"]).set(1);
        let metrics = Self {
            started: Instant::now(),
            build_info,
            uptime: register(&r, Gauge::new("ngit_uptime_seconds", "Seconds since the server started")),
            connections_total: counter(
                &r,
                "ngit_websocket_connections_total",
                "Websocket connections accepted",
            ),
            connections_active: gauge(&r, "ngit_websocket_connections_active", "Open websocket connections"),
            connection_duration: histogram(
                &r,
                "ngit_websocket_connection_duration_seconds",
                "How long websocket connections stayed open",
                CONNECTION_BUCKETS,
            ),
            messages_received: counter_vec(
                &r,
                "ngit_websocket_messages_received_total",
                "Client messages by type",
                &["type"],
            ),
            messages_sent: counter_vec(
                &r,
                "ngit_websocket_messages_sent_total",
                "Relay messages by type",
                &["type"],
            ),
            unique_ips: gauge(
                &r,
                "ngit_websocket_unique_ips",
                "Distinct client IPs with an open websocket connection",
            ),
            flagged_abusers: gauge(
                &r,
                "ngit_websocket_flagged_abusers",
                "Client IPs holding more open websocket connections than abuser_connection_threshold",
            ),
            events_received: counter_vec(
                &r,
                "ngit_events_received_total",
                "EVENTs received, by kind",
                &["kind"],
            ),
            events_stored: counter_vec(&r, "ngit_events_stored_total", "Events stored, by kind", &["kind"]),
            events_rejected: counter_vec(
                &r,
                "ngit_events_rejected_total",
                "Events refused, by kind and reason",
                &["kind", "reason"],
            ),
            events_held: counter_vec(
                &r,
                "grasp_events_held_total",
                "Events accepted but held until their git data arrives, by kind",
                &["kind"],
            ),
            slow_subscriptions_closed: counter(
                &r,
                "grasp_slow_subscriptions_closed_total",
                "Live subscriptions closed because the client read too slowly",
            ),
            req_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "grasp_req_duration_seconds",
                        "Time to send the stored events of a REQ",
                    )
                    .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
                    &["outcome"],
                ),
            ),
            event_duration: histogram(
                &r,
                "grasp_event_duration_seconds",
                "Time to decide about and store one EVENT",
                &[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
            ),
            git_operations: counter_vec(
                &r,
                "ngit_git_operations_total",
                "Git operations (clone, fetch, push) by status",
                &["operation", "status"],
            ),
            git_operation_duration: histogram(
                &r,
                "ngit_git_operation_duration_seconds",
                "How long git operations took",
                GIT_BUCKETS,
            ),
            git_bytes: counter_vec(
                &r,
                "ngit_git_bytes_total",
                "Git smart-HTTP body bytes by direction",
                &["direction"],
            ),
            push_authorizations: counter_vec(
                &r,
                "ngit_git_push_authorization_total",
                "Push authorization decisions",
                &["result"],
            ),
            git_advertisements: counter_vec(
                &r,
                "grasp_git_advertisements_total",
                "Ref advertisements (info/refs, protocol v2 ls-refs) by who made them (grasp in-process, or git)",
                &["request", "answered_by"],
            ),
            top_repos_bytes: gauge_vec(
                &r,
                "ngit_git_top_repos_bytes",
                "Git bytes since start of the busiest repositories",
                &["repo"],
            ),
            repo_traffic: RepoTraffic::default(),
            repositories: gauge(&r, "ngit_repositories_total", "Repositories hosted"),
            repos_aligned: counter(&r, "grasp_repos_aligned_total", "Repositories aligned to a state event"),
            repos_created: counter(
                &r,
                "grasp_repos_created_total",
                "Bare repositories created for announcements",
            ),
            repacks: counter_vec(
                &r,
                "grasp_repo_repacks_total",
                "Background repacks after pushes, by result",
                &["result"],
            ),
            purgatory_held: gauge_vec(
                &r,
                "grasp_purgatory_held",
                "Events held in purgatory until their git data arrives, by type",
                &["type"],
            ),
            purgatory_placeholders: gauge(
                &r,
                "grasp_purgatory_placeholders",
                "refs/nostr refs pushed before their pull request event",
            ),
            purgatory_released: counter_vec(
                &r,
                "grasp_purgatory_released_total",
                "Events released from purgatory when their git data arrived, by type",
                &["type"],
            ),
            purgatory_expired: counter_vec(
                &r,
                "grasp_purgatory_expired_total",
                "Events dropped from purgatory because their git data never arrived, by type",
                &["type"],
            ),
            purgatory_placeholders_expired: counter(
                &r,
                "grasp_purgatory_placeholders_expired_total",
                "Unmatched refs/nostr refs deleted after their deadline",
            ),
            purgatory_refused: counter_vec(
                &r,
                "grasp_purgatory_refused_total",
                "Events refused because a purgatory cap was full, by cap",
                &["cap"],
            ),
            push_refused: counter_vec(
                &r,
                "grasp_push_refused_total",
                "Pushes refused by an abuse bound (rate, placeholders, disk, quota), by bound",
                &["bound"],
            ),
            node_info: gauge_vec(&r, "grasp_node_info", "1, labelled with this node's id (node_id)", &["node"]),
            git_busy: counter_vec(
                &r,
                "grasp_git_busy_total",
                "Git requests answered 503 because no git process slot was free, by cap",
                &["cap"],
            ),
            local_api_requests: counter_vec(
                &r,
                "grasp_local_api_requests_total",
                "Local API requests (git hooks), by result",
                &["result"],
            ),
            connections_open: gauge(
                &r,
                "grasp_connections_open",
                "Open client connections counted by the caps",
            ),
            store_used: gauge(&r, "grasp_store_used_bytes", "Bytes the LMDB event store uses"),
            store_map_size: gauge(&r, "grasp_store_map_size_bytes", "Bytes the LMDB event store may grow to"),
            connections_refused: counter_vec(
                &r,
                "grasp_connections_refused_total",
                "Connections refused by a connection cap, by cap",
                &["cap"],
            ),
            timeouts: counter_vec(
                &r,
                "grasp_client_timeouts_total",
                "Clients cut off for stalling, by what stalled",
                &["stalled"],
            ),
            registry: r,
        };
        metrics.preset();
        metrics
    }

    /// Creates the series of the label sets this module knows at zero, so dashboards show 0
    /// (and `rate()` works) before the first occurrence. The modules that own a label
    /// vocabulary (relay message types, purgatory kinds, caps, bounds, git operations)
    /// prime theirs with [`Metrics::prime`] when they start counting; kinds and rejection
    /// reasons are left to appear when they happen.
    fn preset(&self) {
        for result in ["ok", "error"] {
            self.repacks.with_label_values(&[result]);
            self.req_duration.with_label_values(&[result]);
        }
        for stalled in STALLED {
            self.timeouts.with_label_values(&[stalled]);
        }
    }

    /// Creates the series of `values` of a one-label metric at zero.
    pub fn prime(metric: &IntCounterVec, values: impl IntoIterator<Item = &'static str>) {
        for value in values {
            metric.with_label_values(&[value]);
        }
    }

    /// Adds `bytes` of git traffic to the per-repository totals behind
    /// `ngit_git_top_repos_bytes` (`repo` as it is shown).
    pub fn count_repo_traffic(&self, repo: &str, bytes: u64) {
        self.repo_traffic.add(repo, bytes);
    }

    /// Rebuilds `ngit_git_top_repos_bytes` from the per-repository totals (each render), so
    /// a repository that falls out of the top loses its series.
    fn refresh_top_repos(&self) {
        self.top_repos_bytes.reset();
        for (repo, bytes) in self.repo_traffic.top(TOP_REPOS) {
            self.top_repos_bytes.with_label_values(&[&repo]).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Names the running build in `ngit_build_info` (frontends pass their version and the
    /// git commit they were built from).
    pub fn set_build_info(&self, version: &str, commit: &str) {
        self.build_info.reset();
        self.build_info.with_label_values(&[version, commit]).set(1);
    }

    /// The registry, for frontends that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        self.refresh_top_repos();
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// Registers `collector` in `registry` and returns it, for the metric sets of the
/// background parts (hunting, relay sync). A name already registered there (a second set
/// on one registry, which only tests make) leaves the first one exported.
pub fn register_collector<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    let _ = registry.register(Box::new(collector.clone()));
    collector
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
        kinds::PRIVATE_GRASP_LIST => "10318",
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
        m.set_build_info("9.9.9", "abc123");
        let text = m.render();
        assert!(text.contains("ngit_events_rejected_total{kind=\"1621\",reason=\"unrelated\"} 1"), "{text}");
        assert!(text.contains("ngit_websocket_connections_active 1"));
        assert!(text.contains("ngit_build_info{commit=\"abc123\",version=\"9.9.9\"} 1"), "{text}");
        assert!(!text.contains("commit=\"unknown\""), "the default build info is replaced");
        assert!(text.contains("# TYPE ngit_uptime_seconds gauge"));
        assert_eq!(kind_label(4242), "other");
    }
}
