//! Hunting metrics (`grasp_hunt_*`), registered in the server's registry.
//!
//! Domains come from clone URLs anyone can publish, so the `domain` label is bounded: the
//! first [`MAX_DOMAIN_LABELS`] domains get their own label, later ones share `other`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::metrics::register_collector as register;

/// Values of the `result` label of `grasp_hunt_attempts_total`.
const ATTEMPT_RESULTS: [&str; 2] = ["done", "waiting"];

/// Values of the `result` label of `grasp_hunt_fetches_total`: what a fetch brought, or
/// [`super::remote::FetchError::label`].
const FETCH_RESULTS: [&str; 7] =
    ["objects", "nothing", "error", "timeout", "too_large", "refused", "local_error"];

/// Most distinct `domain` label values.
pub const MAX_DOMAIN_LABELS: usize = 100;

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
    /// Fetches running now, by domain.
    pub domain_in_flight: IntGaugeVec,
    /// Fetches started, by domain.
    pub domain_requests: IntCounterVec,
    /// Held events released after hunting brought their data, by type.
    pub released: IntCounterVec,
    labelled: Arc<Mutex<HashSet<String>>>,
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
            domain_in_flight: register(
                registry,
                IntGaugeVec::new(
                    Opts::new("grasp_hunt_domain_in_flight", "Hunting fetches running, by domain"),
                    &["domain"],
                )
                .expect("valid metric"),
            ),
            domain_requests: counter_vec(
                "grasp_hunt_domain_requests_total",
                "Hunting fetches started, by domain",
                &["domain"],
            ),
            released: counter_vec(
                "grasp_hunt_released_total",
                "Held events released after hunting fetched their git data, by type",
                &["type"],
            ),
            labelled: Arc::default(),
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

    /// The label for `domain`: itself while there is room, `other` after that.
    pub fn domain_label(&self, domain: &str) -> String {
        let mut labelled = self.labelled.lock().expect("label set poisoned");
        if labelled.contains(domain) {
            return domain.to_owned();
        }
        if labelled.len() < MAX_DOMAIN_LABELS {
            labelled.insert(domain.to_owned());
            return domain.to_owned();
        }
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_labels_are_bounded() {
        let m = HuntMetrics::register(&Registry::new());
        for i in 0..MAX_DOMAIN_LABELS {
            assert_eq!(m.domain_label(&format!("d{i}.example")), format!("d{i}.example"));
        }
        assert_eq!(m.domain_label("late.example"), "other");
        assert_eq!(m.domain_label("d0.example"), "d0.example");
    }
}
