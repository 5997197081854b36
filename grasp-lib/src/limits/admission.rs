//! Connection admission: a cap on open connections in all and per client IP.
//!
//! A frontend asks for a [`Permit`] when it accepts a connection (and, when the client IP
//! is only known from a trusted `X-Forwarded-For` header, again per request after the
//! headers). Holding the permit is holding the slot: dropping it gives the slot back, so a
//! permit belongs to whatever lives as long as the connection (its socket, the upgraded
//! websocket). A refusal costs nothing but a counter; established connections are never
//! touched.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::metrics::Metrics;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The server has `limit` open connections already.
    #[error("this server has too many open connections (at most {limit}); try again shortly")]
    Total {
        /// `max_connections`.
        limit: usize,
    },
    /// This client IP has `limit` open connections already.
    #[error("too many open connections from your address (at most {limit}); close some and try again")]
    PerIp {
        /// `max_connections_per_ip`.
        limit: usize,
    },
}

impl Refusal {
    /// Every value of [`Refusal::label`].
    pub const LABELS: [&'static str; 2] = ["total", "per_ip"];

    /// The whole HTTP/1.1 answer a connection refused at accept gets before it is closed
    /// (a 503 with `Retry-After`), written straight to the socket: no HTTP server has the
    /// connection yet.
    pub fn raw_http_answer(&self) -> String {
        let reason = self.to_string();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{reason}",
            reason.len()
        )
    }

    /// Low-cardinality label for metrics (`total`, `per_ip`).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Total { .. } => "total",
            Refusal::PerIp { .. } => "per_ip",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

struct Shared {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
    metrics: Metrics,
}

/// The connection caps of one server. Cheap to clone; clones share the counts.
#[derive(Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("max_total", &self.shared.max_total)
            .field("max_per_ip", &self.shared.max_per_ip)
            .finish_non_exhaustive()
    }
}

/// A slot taken by [`Admission::connection`] or [`Admission::client`]; dropping it gives
/// the slot back.
#[must_use = "the slot is given back when the permit is dropped"]
pub struct Permit {
    shared: Arc<Shared>,
    total: bool,
    ip: Option<IpAddr>,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("total", &self.total).field("ip", &self.ip).finish()
    }
}

impl Admission {
    /// Accepts the next connection on `listener` that the caps admit, with its peer and
    /// permit. A refused connection gets [`Refusal::raw_http_answer`] (one non-blocking
    /// write) and is closed; a failed accept (out of descriptors) is logged and retried
    /// after a short pause instead of spinning. `per_ip_after_headers`: the TCP peer is a
    /// trusted reverse proxy, so only the total cap applies here.
    pub async fn accept(
        &self,
        listener: &tokio::net::TcpListener,
        per_ip_after_headers: bool,
    ) -> (tokio::net::TcpStream, std::net::SocketAddr, Permit) {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(error = %e, "accepting a connection failed (out of file descriptors?)");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    continue;
                }
            };
            match self.connection((!per_ip_after_headers).then(|| remote.ip())) {
                Ok(permit) => return (stream, remote, permit),
                Err(refusal) => {
                    tracing::debug!(peer = %remote, %refusal, "connection refused");
                    let _ = stream.try_write(refusal.raw_http_answer().as_bytes());
                }
            }
        }
    }

    /// Caps of `max_total` connections and `max_per_ip` per IP (0: no per-IP cap).
    pub fn new(max_total: usize, max_per_ip: usize, metrics: Metrics) -> Self {
        Metrics::prime(&metrics.connections_refused, Refusal::LABELS);
        let shared = Shared { max_total, max_per_ip, counts: Mutex::default(), metrics };
        Self { shared: Arc::new(shared) }
    }

    /// Admits a freshly accepted connection: it counts toward the total, and toward `ip`'s
    /// share when the TCP peer is the client (`None` behind a trusted proxy, whose own
    /// address is shared by every client; use [`Admission::client`] after the headers).
    pub fn connection(&self, ip: Option<IpAddr>) -> Result<Permit, Refusal> {
        self.admit(true, ip)
    }

    /// Admits a request whose client IP was learnt from a trusted proxy header: it counts
    /// toward `ip`'s share only (its connection already counts toward the total).
    pub fn client(&self, ip: IpAddr) -> Result<Permit, Refusal> {
        self.admit(false, Some(ip))
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.counts().total
    }

    /// Open connections (or, behind a proxy, requests) of `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.counts().per_ip.get(&crate::rate_limit::address_group(ip)).copied().unwrap_or(0)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.shared.counts.lock().expect("admission counts poisoned")
    }

    fn admit(&self, total: bool, ip: Option<IpAddr>) -> Result<Permit, Refusal> {
        let shared = &self.shared;
        let ip = ip.map(crate::rate_limit::address_group).filter(|_| shared.max_per_ip > 0);
        let outcome = {
            let mut counts = self.counts();
            if total && counts.total >= shared.max_total {
                Err(Refusal::Total { limit: shared.max_total })
            } else if ip.is_some_and(|ip| counts.per_ip.get(&ip).copied().unwrap_or(0) >= shared.max_per_ip) {
                Err(Refusal::PerIp { limit: shared.max_per_ip })
            } else {
                if total {
                    counts.total += 1;
                }
                if let Some(ip) = ip {
                    *counts.per_ip.entry(ip).or_default() += 1;
                }
                Ok(counts.total)
            }
        };
        match outcome {
            Ok(open) => {
                shared.metrics.connections_open.set(open as i64);
                Ok(Permit { shared: self.shared.clone(), total, ip })
            }
            Err(refusal) => {
                shared.metrics.connections_refused.with_label_values(&[refusal.label()]).inc();
                Err(refusal)
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let open = {
            let mut counts = self.shared.counts.lock().expect("admission counts poisoned");
            if self.total {
                counts.total = counts.total.saturating_sub(1);
            }
            if let Some(ip) = self.ip {
                if let Some(n) = counts.per_ip.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.per_ip.remove(&ip);
                    }
                }
            }
            counts.total
        };
        self.shared.metrics.connections_open.set(open as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_cap_refuses_only_that_address_and_slots_come_back() {
        let admission = Admission::new(10, 2, Metrics::new());
        let a = ip("10.0.0.1");
        let first = admission.connection(Some(a)).unwrap();
        let _second = admission.connection(Some(a)).unwrap();
        assert_eq!(admission.connection(Some(a)).unwrap_err(), Refusal::PerIp { limit: 2 });
        let _other = admission.connection(Some(ip("10.0.0.2"))).unwrap();
        assert_eq!(admission.open(), 3);
        drop(first);
        assert_eq!(admission.open_from(a), 1);
        let _again = admission.connection(Some(a)).unwrap();
    }

    #[test]
    fn total_cap_counts_connections_and_forwarded_clients_count_per_ip_only() {
        let metrics = Metrics::new();
        let admission = Admission::new(2, 1, metrics.clone());
        let proxy1 = admission.connection(None).unwrap();
        let _proxy2 = admission.connection(None).unwrap();
        assert_eq!(admission.connection(None).unwrap_err(), Refusal::Total { limit: 2 });
        // Behind the proxy: clients are told apart after the headers.
        let client = admission.client(ip("203.0.113.7")).unwrap();
        assert_eq!(admission.client(ip("203.0.113.7")).unwrap_err(), Refusal::PerIp { limit: 1 });
        let _other = admission.client(ip("203.0.113.8")).unwrap();
        assert_eq!(admission.open(), 2);
        drop(client);
        drop(proxy1);
        assert_eq!(admission.open(), 1);
        assert_eq!(metrics.connections_open.get(), 1);
        assert_eq!(metrics.connections_refused.with_label_values(&["per_ip"]).get(), 1);
        assert_eq!(metrics.connections_refused.with_label_values(&["total"]).get(), 1);
    }

    #[test]
    fn zero_per_ip_cap_means_unlimited() {
        let admission = Admission::new(100, 0, Metrics::new());
        let permits: Vec<Permit> = (0..50).map(|_| admission.connection(Some(ip("::1"))).unwrap()).collect();
        assert_eq!(permits.len(), 50);
        assert_eq!(admission.open_from(ip("::1")), 0);
    }
}
