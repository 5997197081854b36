//! Open websocket connections per client IP, for the connection metrics: how many distinct
//! IPs are connected, and how many hold more connections at once than
//! `abuser_connection_threshold` (a client that opens connection after connection without
//! closing them, or many clients behind one address; the metric flags, nothing is refused).
//!
//! Only IPs with an open connection are tracked, so memory is bounded by open connections.
//! The IPs themselves never leave this module.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::metrics::Metrics;

/// Connection counts per IP, shared by every connection of a relay.
#[derive(Debug, Clone)]
pub struct Peers {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    threshold: usize,
    metrics: Metrics,
}

impl Peers {
    /// Tracks connections into `metrics`; an IP with more than `threshold` open connections
    /// is flagged.
    pub fn new(metrics: Metrics, threshold: usize) -> Self {
        Self { open: Arc::default(), threshold, metrics }
    }

    /// Counts a connection from `peer` as open until the returned guard is dropped.
    pub fn open(&self, peer: IpAddr) -> OpenConnection {
        // Counted by address group (an IPv6 /64 is one client), as every per-address bound.
        let peer = crate::rate_limit::address_group(peer);
        let mut open = self.open.lock().expect("peers poisoned");
        let count = open.entry(peer).or_default();
        *count += 1;
        if *count == self.threshold + 1 {
            self.metrics.flagged_abusers.inc();
        }
        self.metrics.unique_ips.set(open.len() as i64);
        self.metrics.connections_total.inc();
        self.metrics.connections_active.inc();
        OpenConnection { peers: self.clone(), peer, since: Instant::now() }
    }

    fn close(&self, peer: IpAddr) {
        let mut open = self.open.lock().expect("peers poisoned");
        if let Some(count) = open.get_mut(&peer) {
            if *count == self.threshold + 1 {
                self.metrics.flagged_abusers.dec();
            }
            *count -= 1;
            if *count == 0 {
                open.remove(&peer);
            }
        }
        self.metrics.unique_ips.set(open.len() as i64);
        self.metrics.connections_active.dec();
    }
}

/// One open connection; dropping it closes it in the counts and records its duration.
#[derive(Debug)]
pub struct OpenConnection {
    peers: Peers,
    peer: IpAddr,
    since: Instant,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.peers.close(self.peer);
        self.peers.metrics.connection_duration.observe(self.since.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_unique_ips_and_flags_ips_over_the_threshold() {
        let metrics = Metrics::new();
        let peers = Peers::new(metrics.clone(), 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first: Vec<OpenConnection> = (0..3).map(|_| peers.open(a)).collect();
        let other = peers.open(b);
        assert_eq!(metrics.unique_ips.get(), 2);
        assert_eq!(metrics.flagged_abusers.get(), 1, "three connections are over a threshold of two");
        assert_eq!(metrics.connections_active.get(), 4);
        let mut first = first;
        first.pop();
        assert_eq!(metrics.flagged_abusers.get(), 0, "back at the threshold");
        drop(first);
        drop(other);
        assert_eq!(metrics.unique_ips.get(), 0);
        assert_eq!(metrics.connections_active.get(), 0);
        assert_eq!(metrics.connections_total.get(), 4);
        assert_eq!(metrics.connection_duration.get_sample_count(), 4);
    }
}
