//! What keeps a public, unauthenticated server available: how long a client may stall, how
//! many connections it may hold, and how many file descriptors the process may use.
//!
//! Every frontend applies the same pieces, resolved once from the configuration into
//! [`ServerLimits`] (`Config::server_limits`):
//!
//! | Piece | Applied where |
//! |---|---|
//! | [`raise_nofile_limit`] | once at start, before the caps are resolved |
//! | `header_read_timeout` | by the HTTP server while it reads request headers (and while a keep-alive connection idles) |
//! | [`Admission`] | the total cap at accept; the per-IP cap at accept (TCP peer) or, with `trust_forwarded_for`, after the headers on the forwarded address |
//! | [`IdleTimeout`] | on request bodies; [`crate::Grasp::receive_pack`] and [`crate::git::smart_http::upload_pack`] apply it themselves |
//! | [`KeepAlive`] | websocket pings, silent-peer and stalled-write closes, in [`crate::relay::connection::drive`] |
//! | [`GitSlots`] | git processes serving clients, in total and per client: a request waits briefly for a slot, then gets `503` |
//! | [`StorageLimits`] | the free-disk floor and per-owner quota, before a push ([`crate::Grasp::admit_push`]) or a hunted fetch |
//!
//! See `docs/explanation/limits.md` for the behaviour operators and clients see.

mod admission;
pub mod git_slots;
mod idle;
mod nofile;
pub mod storage;

pub use admission::{Admission, Permit, Refusal};
pub use git_slots::{GitBusy, GitSlot, GitSlotLimits, GitSlots};
pub use idle::{is_idle_timeout, IdleTimeout};
pub use nofile::{raise_nofile_limit, NofileLimit};
pub use storage::StorageLimits;

use std::time::Duration;

/// File descriptors kept free of connections for everything else: the event store, the
/// purgatory journal, repositories opened by the git-data step, log files.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Descriptors one connection may need at worst: its socket plus the three pipes to the git
/// process serving it.
const DESCRIPTORS_PER_CONNECTION: u64 = 4;

/// Largest automatic connection cap; beyond this, memory rather than descriptors runs out.
const MAX_AUTOMATIC_CONNECTIONS: usize = 10_000;

/// Smallest automatic connection cap, so a tiny descriptor limit still serves someone.
const MIN_AUTOMATIC_CONNECTIONS: usize = 16;

/// Websocket keep-alive: ping every `interval`; close a connection that stayed silent (no
/// pong, no message) or could not take a write for `interval × missed_pongs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Time between pings; `None` sends no pings and never closes a silent connection.
    pub interval: Option<Duration>,
    /// Intervals without a sign of life before the connection is closed.
    pub missed_pongs: u32,
}

impl KeepAlive {
    /// No pings, no silence limit (tests and embedders that keep connections otherwise).
    pub const OFF: KeepAlive = KeepAlive { interval: None, missed_pongs: 1 };

    /// A ping every `interval_secs` (0: none), closing after `missed_pongs` silent intervals.
    pub fn new(interval_secs: u64, missed_pongs: u32) -> Self {
        KeepAlive { interval: (interval_secs > 0).then(|| Duration::from_secs(interval_secs)), missed_pongs }
    }

    /// How long a connection may stay silent, or a write may take, before it is closed.
    pub fn silence_limit(&self) -> Option<Duration> {
        self.interval.map(|i| i * self.missed_pongs.max(1))
    }
}

/// Every limit a frontend applies, resolved from the configuration and the process's
/// descriptor limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time allowed for a request's headers (and for an idle keep-alive connection).
    pub header_read_timeout: Duration,
    /// Time a request body or response may make no progress.
    pub body_idle_timeout: Duration,
    /// Websocket pings.
    pub keep_alive: KeepAlive,
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections per client IP (0: unlimited).
    pub max_connections_per_ip: usize,
    /// Whether the client IP comes from `X-Forwarded-For` (so the per-IP cap applies after
    /// the headers are read, not at accept).
    pub per_ip_after_headers: bool,
}

/// The connection cap in force: `configured`, or with 0 one the soft descriptor limit
/// `nofile` can serve (see [`raise_nofile_limit`]). A configured cap above what the limit can
/// serve is kept, with a warning.
pub fn max_connections(configured: usize, nofile: Option<u64>) -> usize {
    match configured {
        0 => automatic_max_connections(nofile),
        n => {
            if let Some(soft) = nofile {
                let fits = (soft.saturating_sub(RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION) as usize;
                if n > fits {
                    tracing::warn!(
                        max_connections = n,
                        open_file_limit = soft,
                        "max_connections is above what the open-file limit can serve; \
                         raise the limit (LimitNOFILE=) or lower max_connections"
                    );
                }
            }
            n
        }
    }
}

/// The connection cap that keeps the process under its descriptor limit.
fn automatic_max_connections(nofile: Option<u64>) -> usize {
    let Some(soft) = nofile else { return MAX_AUTOMATIC_CONNECTIONS };
    let fits = soft.saturating_sub(RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION;
    (fits as usize).clamp(MIN_AUTOMATIC_CONNECTIONS, MAX_AUTOMATIC_CONNECTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_cap_stays_under_the_descriptor_limit() {
        assert_eq!(automatic_max_connections(Some(1024)), (1024 - 256) / 4);
        assert_eq!(automatic_max_connections(Some(1_048_576)), MAX_AUTOMATIC_CONNECTIONS);
        assert_eq!(automatic_max_connections(Some(100)), MIN_AUTOMATIC_CONNECTIONS);
        assert_eq!(automatic_max_connections(None), MAX_AUTOMATIC_CONNECTIONS);
        assert_eq!(max_connections(7, Some(1024)), 7);
        assert_eq!(max_connections(0, Some(1024)), (1024 - 256) / 4);
    }

    #[test]
    fn keep_alive_closes_after_the_missed_pongs() {
        assert_eq!(KeepAlive::new(30, 2).silence_limit(), Some(Duration::from_secs(60)));
        assert_eq!(KeepAlive::new(0, 2).silence_limit(), None);
    }
}
