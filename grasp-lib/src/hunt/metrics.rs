//! Hunting metrics (`grasp_hunt_*`), registered in the server's registry.
//!
//! No label carries a host: clone URLs come from events anyone can publish, and a series
//! per host would tell the public which of them answer. Fetches count in total.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::metrics::register_collector as register;

/// Values of the `result` label of `grasp_hunt_attempts_total`.
const ATTEMPT_RESULTS: [&str; 2] = ["done", "waiting"];

/// Values of the `result` label of `grasp_hunt_fetches_total`: what a fetch brought, or
/// [`super::remote::FetchError::label`].
const FETCH_RESULTS: [&str; 7] =
    ["objects", "nothing", "error", "timeout", "too_large", "refused", "local_error"];

/// The hunting metrics of one server. Cheap to clone.
#[derive(Clone)]
pub struct HuntMetrics {
    /// Identifiers queued (waiting for an attempt or in one).
    pub queue_size: IntGauge,
    /// Attempts ended, by result (`done`: nothing left to look for; `waiting`: backing off).
    pub attempts: IntCounterVec,
    /// Fetches, by result (`objects`, `nothing`, `error`, `timeout`, `too_large`, `refused`,
    /// `local_error`).
    pub fetches: IntCounterVec,
    /// Objects new to this server that fetches brought.
    pub objects_fetched: IntCounter,
    /// Bytes fetches brought (as stored: packs and loose objects).
    pub bytes_fetched: IntCounter,
    /// Fetches running now.
    pub in_flight: IntGauge,
    /// Fetches started.
    pub started: IntCounter,
    /// Held events released after hunting brought their data, by type.
    pub released: IntCounterVec,
}

impl std::fmt::Debug for HuntMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HuntMetrics")
    }
}

impl HuntMetrics {
    /// Registers the hunting metrics in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        Self {
            queue_size: register(
                registry,
                IntGauge::new("grasp_hunt_queue_size", "Repository identifiers queued for git-data hunting")
                    .expect("valid metric"),
            ),
            attempts: counter_vec(
                "grasp_hunt_attempts_total",
                "Hunting attempts ended, by result",
                &["result"],
            ),
            fetches: counter_vec(
                "grasp_hunt_fetches_total",
                "Fetches from clone URLs, by result",
                &["result"],
            ),
            objects_fetched: register(
                registry,
                IntCounter::new(
                    "grasp_hunt_objects_fetched_total",
                    "Git objects new to this server that hunting fetched",
                )
                .expect("valid metric"),
            ),
            bytes_fetched: register(
                registry,
                IntCounter::new("grasp_hunt_bytes_fetched_total", "Bytes of git objects hunting fetched")
                    .expect("valid metric"),
            ),
            in_flight: register(
                registry,
                IntGauge::new("grasp_hunt_fetches_in_flight", "Hunting fetches running now")
                    .expect("valid metric"),
            ),
            started: register(
                registry,
                IntCounter::new("grasp_hunt_fetches_started_total", "Hunting fetches started")
                    .expect("valid metric"),
            ),
            released: counter_vec(
                "grasp_hunt_released_total",
                "Held events released after hunting fetched their git data, by type",
                &["type"],
            ),
        }
        .preset()
    }

    /// Creates the series of every fixed label value at zero, so dashboards show 0 (and
    /// `rate()` works) before the first hunt.
    fn preset(self) -> Self {
        for result in ATTEMPT_RESULTS {
            self.attempts.with_label_values(&[result]);
        }
        for result in FETCH_RESULTS {
            self.fetches.with_label_values(&[result]);
        }
        for kind in crate::purgatory::HeldKind::ALL {
            self.released.with_label_values(&[kind.as_str()]);
        }
        self
    }
}
