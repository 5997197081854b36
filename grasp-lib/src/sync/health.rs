//! Connection health of one peer: when to try again, how to catch up, what to report.
//!
//! Pure bookkeeping over instants the caller passes in, so every rule is unit-tested:
//!
//! - a failed attempt (or a connection that dropped soon after it opened) doubles the wait
//!   before the next one, from `reconnect_min` up to `reconnect_max`, with a per-peer
//!   jitter so peers that failed together do not retry together;
//! - a peer that rate-limits us is left alone for `rate_limit_cooldown`;
//! - a peer not connected for `dead_after` is dead and retried only every `dead_retry`;
//! - a reconnect within `catch_up_window` of a disconnect catches up with `since`, unless
//!   the last full reconciliation is older than `full_interval`.

use std::time::Duration;

use nostr::Timestamp;
use tokio::time::Instant;

/// The timers of [`PeerHealth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTimers {
    /// First wait after a failure.
    pub reconnect_min: Duration,
    /// Longest wait between attempts.
    pub reconnect_max: Duration,
    /// How long a peer that rate-limited us is left alone.
    pub rate_limit_cooldown: Duration,
    /// Not connected for this long: the peer is dead.
    pub dead_after: Duration,
    /// How often a dead peer is tried.
    pub dead_retry: Duration,
    /// A reconnect this soon after a disconnect catches up with `since`.
    pub catch_up_window: Duration,
    /// How often a full reconciliation runs while connected.
    pub full_interval: Duration,
}

impl HealthTimers {
    /// The short timers a test suite runs with.
    pub fn test_mode() -> Self {
        Self {
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(5),
            rate_limit_cooldown: Duration::from_secs(3),
            dead_after: Duration::from_secs(30),
            dead_retry: Duration::from_secs(5),
            catch_up_window: Duration::from_secs(15 * 60),
            full_interval: Duration::from_secs(60),
        }
    }
}

impl Default for HealthTimers {
    fn default() -> Self {
        Self {
            reconnect_min: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(3600),
            rate_limit_cooldown: Duration::from_secs(600),
            dead_after: Duration::from_secs(24 * 3600),
            dead_retry: Duration::from_secs(6 * 3600),
            catch_up_window: Duration::from_secs(15 * 60),
            full_interval: Duration::from_secs(24 * 3600),
        }
    }
}

/// How far before a disconnect a `since` catch-up starts: events are usually signed a
/// little before they are published, and clocks differ.
pub const CATCH_UP_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The connection, as `ngit_sync_relay_connected` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected.
    Disconnected = 0,
    /// An attempt is under way.
    Connecting = 1,
    /// Connected, historic sync running.
    Syncing = 2,
    /// Connected and caught up.
    Connected = 3,
    /// Connected, but part of the historic sync failed.
    ConnectedWithFailures = 4,
}

/// The peer, as `ngit_sync_relay_status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStatus {
    /// Connected and working.
    Healthy = 1,
    /// Not connected; will retry.
    Disconnected = 2,
    /// Connected with failures, or failing repeatedly.
    Degraded = 3,
    /// Not connected for a long time; retried rarely.
    Dead = 4,
    /// Told us to slow down; cooling down.
    RateLimited = 5,
}

/// How to sync after connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Reconcile everything.
    Full,
    /// Only events created at or after this time (a short disconnect).
    Since(Timestamp),
}

/// Health of one peer.
#[derive(Debug, Clone)]
pub struct PeerHealth {
    timers: HealthTimers,
    jitter_seed: u64,
    state: ConnectionState,
    /// Consecutive failures (attempts that failed, connections that did not last).
    failures: u32,
    /// Since when the peer has not been connected (None while connected or never tried).
    down_since: Option<Instant>,
    retry_at: Option<Instant>,
    cooldown_until: Option<Instant>,
    connected_at: Option<Instant>,
    disconnected_at: Option<(Instant, Timestamp)>,
    last_full_sync: Option<Instant>,
}

impl PeerHealth {
    /// A peer never tried. `jitter_seed` (e.g. a hash of its URL) spreads its retries.
    pub fn new(timers: HealthTimers, jitter_seed: u64) -> Self {
        Self {
            timers,
            jitter_seed,
            state: ConnectionState::Disconnected,
            failures: 0,
            down_since: None,
            retry_at: None,
            cooldown_until: None,
            connected_at: None,
            disconnected_at: None,
            last_full_sync: None,
        }
    }

    /// Consecutive failures.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// When the next attempt may start (`None`: now).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The wait after the `failures`-th consecutive failure, before jitter.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.timers.reconnect_min.saturating_mul(1u32 << doublings).min(self.timers.reconnect_max)
    }

    fn jittered(&self, wait: Duration) -> Duration {
        // ±10 %, fixed per peer and failure count.
        let spread = (self.jitter_seed ^ u64::from(self.failures).wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 21;
        let permille = 900 + spread * 10;
        wait.mul_f64(permille as f64 / 1000.0)
    }

    /// True when the peer has been down for `dead_after`.
    pub fn is_dead(&self, now: Instant) -> bool {
        self.down_since.is_some_and(|since| now.duration_since(since) >= self.timers.dead_after)
    }

    fn schedule_retry(&mut self, now: Instant) {
        let wait = if self.is_dead(now) {
            self.timers.dead_retry
        } else {
            self.jittered(self.backoff(self.failures))
        };
        let mut at = now + wait;
        if let Some(cooldown) = self.cooldown_until {
            at = at.max(cooldown);
        }
        self.retry_at = Some(at);
    }

    /// An attempt starts.
    pub fn connecting(&mut self, now: Instant) {
        self.state = ConnectionState::Connecting;
        self.down_since.get_or_insert(now);
    }

    /// The attempt failed.
    pub fn connect_failed(&mut self, now: Instant) {
        self.state = ConnectionState::Disconnected;
        self.failures = self.failures.saturating_add(1);
        self.down_since.get_or_insert(now);
        self.schedule_retry(now);
    }

    /// The attempt succeeded; says how to sync.
    pub fn connected(&mut self, now: Instant) -> CatchUp {
        self.state = ConnectionState::Syncing;
        self.down_since = None;
        self.retry_at = None;
        self.connected_at = Some(now);
        let recent = self
            .disconnected_at
            .filter(|(at, _)| now.duration_since(*at) <= self.timers.catch_up_window)
            .map(|(_, wall)| wall);
        match recent {
            Some(wall) if !self.full_sync_due(now) => {
                CatchUp::Since(Timestamp::from(wall.as_secs().saturating_sub(CATCH_UP_MARGIN.as_secs())))
            }
            _ => CatchUp::Full,
        }
    }

    /// The historic sync after connecting ended; `full` when it reconciled everything,
    /// `failed` when part of it failed.
    pub fn historic_done(&mut self, now: Instant, full: bool, failed: bool) {
        self.state = if failed { ConnectionState::ConnectedWithFailures } else { ConnectionState::Connected };
        if full && !failed {
            self.last_full_sync = Some(now);
        }
    }

    /// True when the last full reconciliation is older than `full_interval` (or never ran).
    pub fn full_sync_due(&self, now: Instant) -> bool {
        self.last_full_sync.is_none_or(|at| now.duration_since(at) >= self.timers.full_interval)
    }

    /// How often a full reconciliation runs.
    pub fn full_interval(&self) -> Duration {
        self.timers.full_interval
    }

    /// When the next full reconciliation is due while connected (`None` before the first
    /// complete one).
    pub fn next_full_sync(&self) -> Option<Instant> {
        self.last_full_sync.map(|at| at + self.timers.full_interval)
    }

    /// The connection dropped (`wall` is the current time, for a later `since`). A
    /// connection that did not last counts as a failure, so a peer that accepts and drops
    /// connections is not hammered.
    pub fn disconnected(&mut self, now: Instant, wall: Timestamp) {
        let lasted = self.connected_at.is_some_and(|at| now.duration_since(at) >= self.stable_after());
        self.failures = if lasted { 0 } else { self.failures.saturating_add(1) };
        self.state = ConnectionState::Disconnected;
        self.connected_at = None;
        self.disconnected_at = Some((now, wall));
        self.down_since = Some(now);
        if self.failures == 0 {
            self.retry_at = Some(now + self.jittered(self.timers.reconnect_min));
            if let Some(cooldown) = self.cooldown_until {
                self.retry_at = self.retry_at.max(Some(cooldown));
            }
        } else {
            self.schedule_retry(now);
        }
    }

    /// A connection lasting this long was a good one.
    fn stable_after(&self) -> Duration {
        self.timers.reconnect_max.min(Duration::from_secs(60))
    }

    /// The peer rate-limited us: leave it alone for the cool-down.
    pub fn rate_limited(&mut self, now: Instant) {
        let until = now + self.timers.rate_limit_cooldown;
        self.cooldown_until = Some(until);
        self.retry_at = Some(self.retry_at.map_or(until, |at| at.max(until)));
    }

    /// True while cooling down.
    pub fn cooling_down(&self, now: Instant) -> bool {
        self.cooldown_until.is_some_and(|until| now < until)
    }

    /// The status to report.
    pub fn status(&self, now: Instant) -> PeerStatus {
        if self.cooling_down(now) {
            PeerStatus::RateLimited
        } else if self.is_dead(now) {
            PeerStatus::Dead
        } else {
            match self.state {
                ConnectionState::Connected | ConnectionState::Syncing => PeerStatus::Healthy,
                ConnectionState::ConnectedWithFailures => PeerStatus::Degraded,
                ConnectionState::Connecting | ConnectionState::Disconnected if self.failures >= 3 => {
                    PeerStatus::Degraded
                }
                ConnectionState::Connecting | ConnectionState::Disconnected => PeerStatus::Disconnected,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> HealthTimers {
        HealthTimers::default()
    }

    fn wall(secs: u64) -> Timestamp {
        Timestamp::from(secs)
    }

    #[test]
    fn backoff_doubles_from_five_seconds_to_an_hour() {
        let h = PeerHealth::new(timers(), 0);
        let waits: Vec<u64> = (1..=12).map(|n| h.backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
        assert_eq!(h.backoff(1000).as_secs(), 3600);
    }

    #[test]
    fn failed_attempts_wait_longer_each_time_with_jitter() {
        let t0 = Instant::now();
        let mut h = PeerHealth::new(timers(), 42);
        assert_eq!(h.retry_at(), None, "a new peer is tried at once");
        let mut previous = Duration::ZERO;
        for n in 1..=6 {
            h.connecting(t0);
            h.connect_failed(t0);
            let wait = h.retry_at().unwrap() - t0;
            let nominal = h.backoff(n);
            assert!(wait >= nominal.mul_f64(0.9) && wait <= nominal.mul_f64(1.1), "{n}: {wait:?}");
            assert!(wait > previous);
            previous = wait;
        }
        assert_eq!(h.status(t0), PeerStatus::Degraded);
        let other = PeerHealth::new(timers(), 43);
        assert_ne!(h.jittered(Duration::from_secs(100)), other.jittered(Duration::from_secs(100)));
    }

    #[test]
    fn a_dead_peer_is_retried_rarely() {
        let t0 = Instant::now();
        let mut h = PeerHealth::new(timers(), 1);
        h.connecting(t0);
        h.connect_failed(t0);
        let later = t0 + Duration::from_secs(24 * 3600);
        assert!(h.is_dead(later));
        assert_eq!(h.status(later), PeerStatus::Dead);
        h.connecting(later);
        h.connect_failed(later);
        assert_eq!(h.retry_at().unwrap() - later, timers().dead_retry);
        // Connecting brings it back.
        h.connected(later + Duration::from_secs(1));
        assert!(!h.is_dead(later + Duration::from_secs(2)));
    }

    #[test]
    fn rate_limited_peers_cool_down() {
        let t0 = Instant::now();
        let mut h = PeerHealth::new(timers(), 7);
        h.connected(t0);
        h.rate_limited(t0);
        assert_eq!(h.status(t0), PeerStatus::RateLimited);
        h.disconnected(t0 + Duration::from_secs(1), wall(1000));
        assert!(h.retry_at().unwrap() >= t0 + timers().rate_limit_cooldown);
        let after = t0 + timers().rate_limit_cooldown;
        assert!(!h.cooling_down(after));
        assert_ne!(h.status(after), PeerStatus::RateLimited);
    }

    #[test]
    fn short_disconnects_catch_up_with_since() {
        let t0 = Instant::now();
        let mut h = PeerHealth::new(timers(), 3);
        assert_eq!(h.connected(t0), CatchUp::Full, "first connection");
        h.historic_done(t0, true, false);
        assert_eq!(h.state(), ConnectionState::Connected);
        let drop_at = t0 + Duration::from_secs(3600);
        h.disconnected(drop_at, wall(1_000_000));
        assert_eq!(h.failures(), 0, "a long connection is not a failure");
        assert_eq!(h.retry_at().unwrap() - drop_at, h.jittered(timers().reconnect_min));
        let back = drop_at + Duration::from_secs(60);
        assert_eq!(h.connected(back), CatchUp::Since(wall(1_000_000 - CATCH_UP_MARGIN.as_secs())));
        // A long outage reconciles everything.
        h.disconnected(back + Duration::from_secs(120), wall(2_000_000));
        assert_eq!(h.connected(back + Duration::from_secs(3600)), CatchUp::Full);
    }

    #[test]
    fn a_day_after_the_last_full_sync_the_next_is_due() {
        let t0 = Instant::now();
        let mut h = PeerHealth::new(timers(), 3);
        h.connected(t0);
        h.historic_done(t0, false, true);
        assert_eq!(h.state(), ConnectionState::ConnectedWithFailures);
        assert_eq!(h.status(t0), PeerStatus::Degraded);
        assert!(h.full_sync_due(t0), "a failed sync is not a full one");
        h.historic_done(t0, true, false);
        assert!(!h.full_sync_due(t0 + Duration::from_secs(3600)));
        assert!(h.full_sync_due(t0 + timers().full_interval));
        assert_eq!(h.next_full_sync(), Some(t0 + timers().full_interval));
        // A short disconnect after the interval still reconciles everything.
        let late = t0 + timers().full_interval;
        h.disconnected(late, wall(5_000_000));
        assert_eq!(h.connected(late + Duration::from_secs(10)), CatchUp::Full);
    }

    #[test]
    fn connections_that_drop_at_once_back_off() {
        let t0 = Instant::now();
        let mut h = PeerHealth::new(timers(), 9);
        let mut now = t0;
        for n in 1..=4 {
            h.connected(now);
            now += Duration::from_secs(1);
            h.disconnected(now, wall(1000));
            assert_eq!(h.failures(), n);
            let wait = h.retry_at().unwrap() - now;
            assert!(wait >= h.backoff(n).mul_f64(0.9), "{n}: {wait:?}");
            now = h.retry_at().unwrap();
        }
    }
}
