//! Relay sync metrics, registered in the server's registry.
//!
//! Where ngit-grasp exports a metric for the same thing, the name, type and labels are
//! its own (`ngit_sync_*`), so existing dashboards keep working; what it has no metric for
//! is `grasp_sync_*`.
//!
//! The `relay` label names a peer only when the operator configured it (a bootstrap
//! relay). Every other peer came from an announcement anyone can publish, and a series per
//! such URL would tell the public which addresses answer a websocket (a port scanner
//! anyone can read): they count together under `discovered`, and their per-peer state is
//! kept here, out of the metrics.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::health::{ConnectionState, PeerStatus};
use crate::metrics::register_collector as register;

/// The sync metrics of one server. Cheap to clone.
#[derive(Clone)]
pub struct SyncMetrics {
    /// Connection state per peer: 0 disconnected, 1 connecting, 2 syncing, 3 connected,
    /// 4 connected with historic-sync failures.
    pub relay_connected: IntGaugeVec,
    /// Status per peer: 1 healthy, 2 disconnected, 3 degraded, 4 dead, 5 rate limited.
    pub relay_status: IntGaugeVec,
    /// Consecutive failures per peer.
    pub relay_failures: IntGaugeVec,
    /// Connection attempts per peer and result (`success`, `failure`).
    pub connection_attempts: IntCounterVec,
    /// Events newly accepted (stored or held) through sync.
    pub events_synced: IntCounter,
    /// Events received from peers, whatever became of them.
    pub events: IntCounter,
    /// Events newly accepted by a `since` catch-up after a short disconnect.
    pub gap_events: IntCounter,
    /// Events received per peer and outcome (`stored`, `held`, `duplicate`, `rejected`,
    /// `remembered`, `expired_here`, `forged`, `error`).
    pub peer_events: IntCounterVec,
    /// Peers known.
    pub relays_tracked: IntGauge,
    /// Peers connected now.
    pub relays_connected: IntGauge,
    /// Peers marked dead.
    pub relays_dead: IntGauge,
    /// Historic syncs per method (`negentropy`, `req`) and result (`ok`, `error`).
    pub reconciliations: IntCounterVec,
    /// Refused events kept in full, by kind.
    pub rejected_hot_current: IntGaugeVec,
    /// Refused events seen again while kept in full, by kind.
    pub rejected_hot_hits: IntCounterVec,
    /// Events seen that were not kept in full, by kind.
    pub rejected_hot_misses: IntCounterVec,
    /// Full events dropped from memory after their time, by kind.
    pub rejected_hot_expired: IntCounterVec,
    /// Refused events remembered by summary (full ones included), by kind.
    pub rejected_cold_current: IntGaugeVec,
    /// Refused events seen again while only summarized, by kind.
    pub rejected_cold_hits: IntCounterVec,
    /// Summaries dropped after their time or for room, by kind.
    pub rejected_cold_expired: IntCounterVec,
    /// Refused events evaluated again because what they depended on arrived, by kind.
    pub rejected_invalidated: IntCounterVec,
    /// Sync Plus lookups of people's relay lists, by result (`found`, `none`: per person;
    /// `error`: per failed query).
    pub plus_lookups: IntCounterVec,
    /// People Sync Plus follows.
    pub plus_authors: IntGauge,
    /// Relays Sync Plus asks (besides GRASP-02 peers).
    pub plus_relays: IntGauge,
    /// People covered through the fallback relays.
    pub plus_fallback_authors: IntGauge,
    /// Events newly accepted from Sync Plus relays, by the relay's purpose.
    pub plus_events: IntCounterVec,
    /// Refusals a relay sent because we asked too much (subscriptions, filters, rate), by
    /// who asked (`peer`: GRASP-02, `sync_plus`).
    pub budget_refusals: IntCounterVec,
    /// Sync Plus relays and their purpose.
    plus_purposes: Arc<Mutex<HashMap<String, &'static str>>>,
    /// Peers whose URL may be a label value (the operator's bootstrap relays).
    labelled: Arc<HashSet<String>>,
    /// Every peer's last reported state, and events it brought that were accepted.
    peers: Arc<Mutex<HashMap<String, PeerReport>>>,
}

/// The label of every peer the operator did not configure.
pub const DISCOVERED: &str = "discovered";

/// One peer's state, as its session last reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerReport {
    /// [`super::health::ConnectionState`] as a number.
    pub state: i64,
    /// [`super::health::PeerStatus`] as a number.
    pub status: i64,
    /// Consecutive failures.
    pub failures: i64,
    /// Events it brought that were newly accepted (stored or held).
    pub accepted: u64,
}

impl std::fmt::Debug for SyncMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncMetrics")
    }
}

impl SyncMetrics {
    /// Registers the sync metrics in `registry` (no peer named in labels; see
    /// [`SyncMetrics::with_labelled`]).
    pub fn register(registry: &Registry) -> Self {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let counter =
            |name: &str, help: &str| register(registry, IntCounter::new(name, help).expect("valid metric"));
        let gauge =
            |name: &str, help: &str| register(registry, IntGauge::new(name, help).expect("valid metric"));
        Self {
            relay_connected: gauge_vec(
                "ngit_sync_relay_connected",
                "Peer connection: 0 disconnected, 1 connecting, 2 syncing, 3 connected, 4 connected with sync failures",
                &["relay"],
            ),
            relay_status: gauge_vec(
                "ngit_sync_relay_status",
                "Peer status: 1 healthy, 2 disconnected, 3 degraded, 4 dead, 5 rate limited",
                &["relay"],
            ),
            relay_failures: gauge_vec("ngit_sync_relay_failures", "Consecutive failures of a peer", &["relay"]),
            connection_attempts: counter_vec(
                "ngit_sync_connection_attempts_total",
                "Connection attempts to peers, by result",
                &["relay", "result"],
            ),
            events_synced: counter("ngit_sync_events_synced_total", "Events newly accepted through sync"),
            events: counter("ngit_sync_events_total", "Events received from peers"),
            gap_events: counter(
                "ngit_sync_gap_events_total",
                "Events newly accepted by a catch-up after a short disconnect",
            ),
            peer_events: counter_vec(
                "grasp_sync_peer_events_total",
                "Events received per peer and outcome",
                &["relay", "outcome"],
            ),
            relays_tracked: gauge("ngit_sync_relays_tracked_total", "Peers known"),
            relays_connected: gauge("ngit_sync_relays_connected_total", "Peers connected"),
            relays_dead: gauge("ngit_sync_relays_dead_total", "Peers marked dead"),
            reconciliations: counter_vec(
                "grasp_sync_reconciliations_total",
                "Historic syncs of one filter, by method and result",
                &["method", "result"],
            ),
            rejected_hot_current: gauge_vec(
                "ngit_sync_rejected_hot_cache_current",
                "Refused synced events kept in full",
                &["event_type"],
            ),
            rejected_hot_hits: counter_vec(
                "ngit_sync_rejected_hot_cache_hits_total",
                "Refused synced events seen again while kept in full",
                &["event_type"],
            ),
            rejected_hot_misses: counter_vec(
                "ngit_sync_rejected_hot_cache_misses_total",
                "Synced events not kept in full",
                &["event_type"],
            ),
            rejected_hot_expired: counter_vec(
                "ngit_sync_rejected_hot_cache_expired_total",
                "Refused synced events dropped from the full cache",
                &["event_type"],
            ),
            rejected_cold_current: gauge_vec(
                "ngit_sync_rejected_cold_index_current",
                "Refused synced events remembered by id",
                &["event_type"],
            ),
            rejected_cold_hits: counter_vec(
                "grasp_sync_rejected_cold_index_hits_total",
                "Refused synced events seen again while remembered only by id",
                &["event_type"],
            ),
            rejected_cold_expired: counter_vec(
                "ngit_sync_rejected_cold_index_expired_total",
                "Refused synced events forgotten after their time or for room",
                &["event_type"],
            ),
            rejected_invalidated: counter_vec(
                "ngit_sync_rejected_invalidated_total",
                "Refused synced events evaluated again because what they depended on arrived",
                &["event_type"],
            ),
            plus_lookups: counter_vec(
                "grasp_sync_plus_lookups_total",
                "Sync Plus relay-list lookups: people found, people without a list, failed queries",
                &["result"],
            ),
            plus_authors: gauge("grasp_sync_plus_authors", "People Sync Plus follows"),
            plus_relays: gauge("grasp_sync_plus_relays", "Relays Sync Plus asks besides GRASP-02 peers"),
            plus_fallback_authors: gauge(
                "grasp_sync_plus_fallback_authors",
                "People without a relay list, covered through the fallback relays",
            ),
            plus_events: counter_vec(
                "grasp_sync_plus_events_total",
                "Events newly accepted from Sync Plus relays, by the relay's purpose",
                &["purpose"],
            ),
            budget_refusals: counter_vec(
                "grasp_sync_budget_refusals_total",
                "Refusals relays sent because sync asked too much, by who asked",
                &["source"],
            ),
            plus_purposes: Arc::default(),
            labelled: Arc::default(),
            peers: Arc::default(),
        }
    }

    /// Sets the Sync Plus relays and their purposes (for [`SyncMetrics::plus_events`]).
    pub fn set_plus_purposes(&self, purposes: HashMap<String, &'static str>) {
        *self.plus_purposes.lock().expect("purposes poisoned") = purposes;
    }

    /// True when `relay` is a Sync Plus relay.
    pub fn is_plus_relay(&self, relay: &str) -> bool {
        self.plus_purposes.lock().expect("purposes poisoned").contains_key(relay)
    }

    /// The same metrics naming `peers` (operator-configured relays) in their labels.
    pub fn with_labelled(mut self, peers: impl IntoIterator<Item = String>) -> Self {
        self.labelled = Arc::new(peers.into_iter().collect());
        self
    }

    /// The `relay` label of `peer`: its URL when the operator configured it, else
    /// [`DISCOVERED`].
    pub fn label<'a>(&self, peer: &'a str) -> &'a str {
        if self.labelled.contains(peer) {
            peer
        } else {
            DISCOVERED
        }
    }

    /// Records a peer's state; the per-peer gauges exist only for labelled peers.
    pub fn report_peer(&self, peer: &str, state: i64, status: i64, failures: i64) {
        {
            let mut peers = self.peers.lock().expect("peer reports poisoned");
            let report = peers.entry(peer.to_owned()).or_default();
            (report.state, report.status, report.failures) = (state, status, failures);
            self.set_totals(&peers);
        }
        if self.labelled.contains(peer) {
            self.relay_connected.with_label_values(&[peer]).set(state);
            self.relay_status.with_label_values(&[peer]).set(status);
            self.relay_failures.with_label_values(&[peer]).set(failures);
        }
    }

    /// Counts an event `peer` brought, with what became of it.
    pub fn peer_event(&self, peer: &str, outcome: &str, newly_accepted: bool) {
        if newly_accepted {
            self.peers.lock().expect("peer reports poisoned").entry(peer.to_owned()).or_default().accepted +=
                1;
            if let Some(purpose) = self.plus_purposes.lock().expect("purposes poisoned").get(peer) {
                self.plus_events.with_label_values(&[purpose]).inc();
            }
        }
        self.peer_events.with_label_values(&[self.label(peer), outcome]).inc();
    }

    fn set_totals(&self, peers: &HashMap<String, PeerReport>) {
        let connected = peers.values().filter(|r| r.state >= ConnectionState::Syncing as i64).count();
        let dead = peers.values().filter(|r| r.status == PeerStatus::Dead as i64).count();
        self.relays_tracked.set(peers.len() as i64);
        self.relays_connected.set(connected as i64);
        self.relays_dead.set(dead as i64);
    }

    /// What `peer` last reported.
    pub fn peer(&self, peer: &str) -> PeerReport {
        self.peers.lock().expect("peer reports poisoned").get(peer).copied().unwrap_or_default()
    }

    /// Removes every per-peer series of `relay` (it is no longer a peer).
    pub fn forget_relay(&self, relay: &str) {
        {
            let mut peers = self.peers.lock().expect("peer reports poisoned");
            peers.remove(relay);
            self.set_totals(&peers);
        }
        let _ = self.relay_connected.remove_label_values(&[relay]);
        let _ = self.relay_status.remove_label_values(&[relay]);
        let _ = self.relay_failures.remove_label_values(&[relay]);
    }
}
