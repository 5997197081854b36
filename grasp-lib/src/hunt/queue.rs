//! The hunt queue: one entry per repository identifier (not per event), with its timing.
//!
//! Pure bookkeeping over a caller-supplied clock (milliseconds since the Unix epoch), so the
//! timing rules are unit-tested without waiting:
//!
//! - a new event schedules the identifier after its source's delay (a client's state is
//!   usually followed by a push, a synced one is not); when an entry exists already, the
//!   sooner time wins, so a burst of events shares one attempt (debounce);
//! - every new event starts the entry fresh: its attempt count goes back to zero, because
//!   a new event often means new data somewhere;
//! - an attempt that left events waiting backs off: `base`, doubling, capped at `max`;
//! - an event that arrives while an attempt runs gets its own attempt afterwards, without
//!   backoff.

use std::collections::HashMap;
use std::time::Duration;

/// How long to wait, by situation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueTimers {
    /// First attempt after an event a client published (a push usually follows).
    pub client_delay: Duration,
    /// First attempt after an event that came by relay sync (bursts batch up).
    pub sync_delay: Duration,
    /// Wait after the first attempt that left events waiting; doubles each time.
    pub backoff_base: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl Default for QueueTimers {
    fn default() -> Self {
        Self {
            client_delay: Duration::from_secs(180),
            sync_delay: Duration::from_millis(500),
            backoff_base: Duration::from_secs(20),
            backoff_max: Duration::from_secs(120),
        }
    }
}

impl QueueTimers {
    /// The short timers a test suite runs with.
    pub fn test_mode() -> Self {
        Self {
            client_delay: Duration::from_millis(1000),
            sync_delay: Duration::from_millis(100),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_millis(2000),
        }
    }
}

impl QueueTimers {
    /// The wait after `attempts` attempts that did not finish the job (1 → base).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.backoff_base.saturating_mul(1u32 << doublings).min(self.backoff_max)
    }
}

/// One queued identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// No attempt starts before this time (ms since the Unix epoch).
    pub next_attempt: u64,
    /// Attempts since the last new event (drives the backoff).
    pub attempts: u32,
    /// An attempt is running now.
    pub running: bool,
    /// A new event arrived while the attempt ran: attempt again at this time, fresh.
    pub rerun_at: Option<u64>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Nothing left to look for: every held event was released, expired, or needs nothing a
    /// remote could provide. The identifier leaves the queue.
    Done,
    /// Events still wait for objects no remote gave us: try again after the backoff.
    Waiting,
}

/// Identifiers waiting for their next attempt.
#[derive(Debug, Clone, Default)]
pub struct HuntQueue {
    entries: HashMap<String, QueueEntry>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl HuntQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new event for `identifier`: attempt after `delay`, or sooner if already due sooner,
    /// and start the backoff over.
    pub fn enqueue(&mut self, identifier: &str, delay: Duration, now: u64) {
        let at = now.saturating_add(ms(delay));
        match self.entries.get_mut(identifier) {
            Some(entry) if entry.running => {
                entry.rerun_at = Some(entry.rerun_at.map_or(at, |r| r.min(at)));
            }
            Some(entry) => {
                entry.attempts = 0;
                entry.next_attempt = entry.next_attempt.min(at);
            }
            None => {
                self.entries.insert(
                    identifier.to_owned(),
                    QueueEntry { next_attempt: at, attempts: 0, running: false, rerun_at: None },
                );
            }
        }
    }

    /// Puts an identifier back as it was before a restart (attempt count and time kept).
    pub fn restore(&mut self, identifier: &str, next_attempt: u64, attempts: u32) {
        self.entries.insert(
            identifier.to_owned(),
            QueueEntry { next_attempt, attempts, running: false, rerun_at: None },
        );
    }

    /// Takes every identifier whose time has come and marks it running (soonest first).
    pub fn take_due(&mut self, now: u64) -> Vec<String> {
        let mut due: Vec<(u64, String)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.running && e.next_attempt <= now)
            .map(|(id, e)| (e.next_attempt, id.clone()))
            .collect();
        due.sort();
        for (_, id) in &due {
            if let Some(entry) = self.entries.get_mut(id) {
                entry.running = true;
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// Records the end of the running attempt of `identifier`.
    pub fn finish(&mut self, identifier: &str, end: AttemptEnd, timers: &QueueTimers, now: u64) {
        let Some(entry) = self.entries.get_mut(identifier) else { return };
        entry.running = false;
        if let Some(at) = entry.rerun_at.take() {
            // An event arrived meanwhile: it deserves a fresh attempt whatever this one found.
            entry.attempts = 0;
            entry.next_attempt = at.max(now);
            return;
        }
        match end {
            AttemptEnd::Done => {
                self.entries.remove(identifier);
            }
            AttemptEnd::Waiting => {
                entry.attempts = entry.attempts.saturating_add(1);
                entry.next_attempt = now.saturating_add(ms(timers.backoff(entry.attempts)));
            }
        }
    }

    /// Forgets `identifier` (nothing of it is held any more).
    pub fn remove(&mut self, identifier: &str) {
        self.entries.remove(identifier);
    }

    /// The entry of `identifier`, if queued.
    pub fn get(&self, identifier: &str) -> Option<&QueueEntry> {
        self.entries.get(identifier)
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &QueueEntry)> {
        self.entries.iter()
    }

    /// Number of queued identifiers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the next attempt that is not running yet is due.
    pub fn next_due(&self) -> Option<u64> {
        self.entries.values().filter(|e| !e.running).map(|e| e.next_attempt).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn timers() -> QueueTimers {
        QueueTimers::default()
    }

    #[test]
    fn client_events_wait_three_minutes_and_synced_ones_half_a_second() {
        let t = timers();
        let mut q = HuntQueue::new();
        q.enqueue("client", t.client_delay, 0);
        q.enqueue("synced", t.sync_delay, 0);
        assert_eq!(q.next_due(), Some(500));
        assert!(q.take_due(499).is_empty());
        assert_eq!(q.take_due(500), vec!["synced"]);
        assert!(q.take_due(180 * S - 1).is_empty(), "the running one is not taken twice");
        assert_eq!(q.take_due(180 * S), vec!["client"]);
        assert_eq!(q.next_due(), None, "both running");
    }

    #[test]
    fn a_burst_of_events_shares_one_attempt_and_the_sooner_time_wins() {
        let t = timers();
        let mut q = HuntQueue::new();
        q.enqueue("r", t.sync_delay, 0);
        q.enqueue("r", t.sync_delay, 100);
        q.enqueue("r", t.sync_delay, 200);
        assert_eq!(q.len(), 1);
        assert_eq!(q.get("r").unwrap().next_attempt, 500, "debounced to the first window");
        // A client event does not push a sooner synced attempt back.
        q.enqueue("r", t.client_delay, 300);
        assert_eq!(q.get("r").unwrap().next_attempt, 500);
        // A synced event brings a client's three-minute wait forward.
        let mut q = HuntQueue::new();
        q.enqueue("r", t.client_delay, 0);
        q.enqueue("r", t.sync_delay, 10 * S);
        assert_eq!(q.get("r").unwrap().next_attempt, 10 * S + 500);
    }

    #[test]
    fn backoff_doubles_from_twenty_seconds_to_a_two_minute_cap() {
        let t = timers();
        let waits: Vec<u64> = (1..=6).map(|n| t.backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![20, 40, 80, 120, 120, 120]);
        assert_eq!(t.backoff(u32::MAX).as_secs(), 120, "no overflow");

        let mut q = HuntQueue::new();
        q.enqueue("r", t.sync_delay, 0);
        let mut now = 500;
        let mut gaps = Vec::new();
        for _ in 0..5 {
            assert_eq!(q.take_due(now), vec!["r"]);
            now += 3 * S; // the attempt takes a while
            q.finish("r", AttemptEnd::Waiting, &t, now);
            let next = q.get("r").unwrap().next_attempt;
            gaps.push((next - now) / S);
            now = next;
        }
        assert_eq!(gaps, vec![20, 40, 80, 120, 120]);
        assert_eq!(q.get("r").unwrap().attempts, 5);
    }

    #[test]
    fn a_new_event_starts_fresh() {
        let t = timers();
        let mut q = HuntQueue::new();
        q.enqueue("r", t.sync_delay, 0);
        for now in [500, 21_000, 62_000] {
            q.take_due(now);
            q.finish("r", AttemptEnd::Waiting, &t, now);
        }
        assert_eq!(q.get("r").unwrap().attempts, 3);
        let backing_off_until = q.get("r").unwrap().next_attempt;
        assert_eq!(backing_off_until, 62_000 + 80 * S);
        q.enqueue("r", t.sync_delay, 70 * S);
        let entry = q.get("r").unwrap();
        assert_eq!((entry.attempts, entry.next_attempt), (0, 70 * S + 500));
        q.take_due(entry.next_attempt);
        q.finish("r", AttemptEnd::Waiting, &t, 71 * S);
        assert_eq!(q.get("r").unwrap().next_attempt, 91 * S, "backoff starts over at 20 s");
    }

    #[test]
    fn an_event_during_an_attempt_gets_its_own_attempt_without_backoff() {
        let t = timers();
        let mut q = HuntQueue::new();
        q.enqueue("r", t.sync_delay, 0);
        q.take_due(500);
        q.enqueue("r", t.sync_delay, 1000);
        assert!(q.get("r").unwrap().running);
        q.finish("r", AttemptEnd::Done, &t, 5000);
        let entry = q.get("r").unwrap();
        assert_eq!((entry.attempts, entry.next_attempt, entry.running), (0, 5000, false));
        // And when the attempt ends early, the rerun waits for its own delay.
        q.take_due(5000);
        q.enqueue("r", t.client_delay, 6000);
        q.finish("r", AttemptEnd::Waiting, &t, 7000);
        assert_eq!(q.get("r").unwrap().next_attempt, 186 * S);
    }

    #[test]
    fn done_leaves_the_queue() {
        let t = timers();
        let mut q = HuntQueue::new();
        q.enqueue("r", t.sync_delay, 0);
        q.take_due(500);
        q.finish("r", AttemptEnd::Done, &t, 600);
        assert!(q.is_empty());
        q.finish("gone", AttemptEnd::Waiting, &t, 700); // unknown: ignored
        assert!(q.is_empty());
    }
}
