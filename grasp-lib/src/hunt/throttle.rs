//! Per-domain throttle: at most `concurrent` requests in flight and `per_minute` started in
//! any 60-second window to one domain (a registrable domain: every name under
//! `evil.example` shares one budget), at most `total` in flight over all domains, with a
//! round-robin line of identifiers waiting for a slot, so one repository with many URLs on a
//! server cannot starve the others.
//!
//! Pure bookkeeping over a caller-supplied clock (ms). Nothing here polls: the caller asks
//! for [`DomainThrottles::grant`] when something can have changed — a request finished, an
//! identifier started waiting, or the time [`DomainThrottles::next_wakeup`] named has come
//! (the oldest request of a full window ages out).

use std::collections::{BTreeMap, VecDeque};

/// Length of the rate window.
pub const WINDOW_MS: u64 = 60_000;

/// Limits applied to every domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Requests in flight at once.
    pub concurrent: u32,
    /// Requests started in any 60-second window.
    pub per_minute: u32,
    /// Requests in flight at once over every domain.
    pub total: u32,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self { concurrent: 5, per_minute: 30, total: 4 }
    }
}

#[derive(Debug, Default)]
struct Domain {
    in_flight: u32,
    /// Start times inside the current window, oldest first.
    starts: VecDeque<u64>,
    /// Identifiers waiting for a slot, in turn order.
    waiting: VecDeque<String>,
}

impl Domain {
    fn forget_old(&mut self, now: u64) {
        while self.starts.front().is_some_and(|t| now.saturating_sub(*t) >= WINDOW_MS) {
            self.starts.pop_front();
        }
    }

    fn has_capacity(&mut self, limits: ThrottleLimits, now: u64) -> bool {
        self.forget_old(now);
        self.in_flight < limits.concurrent && (self.starts.len() as u64) < u64::from(limits.per_minute)
    }

    fn idle(&self) -> bool {
        self.in_flight == 0 && self.waiting.is_empty() && self.starts.is_empty()
    }
}

/// The throttles of every domain contacted recently.
#[derive(Debug, Default)]
pub struct DomainThrottles {
    limits: ThrottleLimits,
    domains: BTreeMap<String, Domain>,
}

impl DomainThrottles {
    /// Throttles applying `limits` to each domain.
    pub fn new(limits: ThrottleLimits) -> Self {
        Self { limits, domains: BTreeMap::new() }
    }

    /// Requests in flight over every domain.
    pub fn total_in_flight(&self) -> u32 {
        self.domains.values().map(|d| d.in_flight).sum()
    }

    /// True when a request to `domain` may start now without jumping the line.
    pub fn can_start(&mut self, domain: &str, now: u64) -> bool {
        let limits = self.limits;
        if self.total_in_flight() >= limits.total {
            return false;
        }
        match self.domains.get_mut(domain) {
            Some(d) => d.waiting.is_empty() && d.has_capacity(limits, now),
            None => limits.concurrent > 0 && limits.per_minute > 0,
        }
    }

    /// Takes a slot of `domain` (the caller checked [`Self::can_start`] or got a grant).
    pub fn start(&mut self, domain: &str, now: u64) {
        let d = self.domains.entry(domain.to_owned()).or_default();
        d.in_flight += 1;
        d.starts.push_back(now);
    }

    /// Gives back a slot of `domain`.
    pub fn finish(&mut self, domain: &str, now: u64) {
        if let Some(d) = self.domains.get_mut(domain) {
            d.in_flight = d.in_flight.saturating_sub(1);
            d.forget_old(now);
        }
    }

    /// `identifier` waits for a slot of `domain` (at the end of the line, once).
    pub fn wait(&mut self, domain: &str, identifier: &str) {
        let d = self.domains.entry(domain.to_owned()).or_default();
        if !d.waiting.iter().any(|w| w == identifier) {
            d.waiting.push_back(identifier.to_owned());
        }
    }

    /// `identifier` no longer waits anywhere.
    pub fn cancel(&mut self, identifier: &str) {
        for d in self.domains.values_mut() {
            d.waiting.retain(|w| w != identifier);
        }
    }

    /// Hands free slots to waiting identifiers, in turn order per domain. A granted
    /// identifier holds the slot (already started) and stops waiting on other domains,
    /// since an identifier fetches from one URL at a time.
    pub fn grant(&mut self, now: u64) -> Vec<(String, String)> {
        let limits = self.limits;
        let mut granted: Vec<(String, String)> = Vec::new();
        loop {
            let mut progress = false;
            let names: Vec<String> = self.domains.keys().cloned().collect();
            for name in names {
                if self.total_in_flight() >= limits.total {
                    break;
                }
                let Some(d) = self.domains.get_mut(&name) else { continue };
                if d.waiting.is_empty() || !d.has_capacity(limits, now) {
                    continue;
                }
                let Some(identifier) = d.waiting.pop_front() else { continue };
                d.in_flight += 1;
                d.starts.push_back(now);
                self.cancel(&identifier);
                granted.push((name, identifier));
                progress = true;
            }
            if !progress {
                break;
            }
        }
        self.domains.retain(|_, d| {
            d.forget_old(now);
            !d.idle()
        });
        granted
    }

    /// When a domain whose line is blocked only by its rate window gets a slot back. Slots
    /// freed by finishing requests need no timer: [`Self::finish`] is followed by a grant.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.domains
            .values()
            .filter(|d| !d.waiting.is_empty() && d.in_flight < self.limits.concurrent)
            .filter(|d| d.starts.len() as u64 >= u64::from(self.limits.per_minute))
            .filter_map(|d| d.starts.front().map(|t| t + WINDOW_MS))
            .min()
    }

    /// Requests in flight to `domain`.
    pub fn in_flight(&self, domain: &str) -> u32 {
        self.domains.get(domain).map_or(0, |d| d.in_flight)
    }

    /// Identifiers waiting for `domain`, in turn order.
    pub fn waiting(&self, domain: &str) -> Vec<String> {
        self.domains.get(domain).map(|d| d.waiting.iter().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_five_requests_in_flight_per_domain() {
        let mut t = DomainThrottles::new(ThrottleLimits { total: 100, ..ThrottleLimits::default() });
        for _ in 0..5 {
            assert!(t.can_start("a.example", 0));
            t.start("a.example", 0);
        }
        assert!(!t.can_start("a.example", 0), "sixth request waits");
        assert!(t.can_start("b.example", 0), "other domains are independent");
        t.wait("a.example", "r6");
        assert!(t.grant(1).is_empty(), "no slot yet");
        t.finish("a.example", 2);
        assert_eq!(t.grant(2), vec![("a.example".to_owned(), "r6".to_owned())]);
        assert_eq!(t.in_flight("a.example"), 5);
    }

    #[test]
    fn at_most_thirty_requests_per_minute_per_domain() {
        let mut t = DomainThrottles::new(ThrottleLimits::default());
        for i in 0..30 {
            let now = i * 100;
            assert!(t.can_start("a.example", now), "request {i}");
            t.start("a.example", now);
            t.finish("a.example", now + 50);
        }
        assert!(!t.can_start("a.example", 3000), "31st within the minute waits");
        t.wait("a.example", "r");
        assert_eq!(t.next_wakeup(), Some(WINDOW_MS), "when the first request ages out");
        assert!(t.grant(WINDOW_MS - 1).is_empty());
        assert_eq!(t.grant(WINDOW_MS), vec![("a.example".to_owned(), "r".to_owned())]);
        assert_eq!(t.next_wakeup(), None);
    }

    #[test]
    fn at_most_total_requests_in_flight_over_every_domain() {
        let mut t = DomainThrottles::new(ThrottleLimits { concurrent: 5, per_minute: 1000, total: 2 });
        t.start("a.example", 0);
        t.start("b.example", 0);
        assert!(!t.can_start("c.example", 0), "the third domain waits for a global slot");
        t.wait("c.example", "r");
        assert!(t.grant(1).is_empty());
        t.finish("a.example", 2);
        assert_eq!(t.grant(2), vec![("c.example".to_owned(), "r".to_owned())]);
        assert_eq!(t.total_in_flight(), 2);
    }

    #[test]
    fn waiting_identifiers_take_turns() {
        let limits = ThrottleLimits { concurrent: 1, per_minute: 1000, total: 100 };
        let mut t = DomainThrottles::new(limits);
        t.start("d", 0);
        for r in ["a", "b", "c"] {
            t.wait("d", r);
        }
        assert!(!t.can_start("d", 0), "nobody jumps the line");
        let mut order = Vec::new();
        for now in 1..=6 {
            t.finish("d", now);
            let granted = t.grant(now);
            assert_eq!(granted.len(), 1);
            let r = granted[0].1.clone();
            // Each repository has more URLs on this domain: back to the end of the line.
            t.wait("d", &r);
            order.push(r);
        }
        assert_eq!(order, vec!["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn a_grant_on_one_domain_ends_the_wait_on_the_others() {
        let limits = ThrottleLimits { concurrent: 1, per_minute: 1000, total: 100 };
        let mut t = DomainThrottles::new(limits);
        t.start("a", 0);
        t.start("b", 0);
        t.wait("a", "r");
        t.wait("b", "r");
        t.wait("b", "s");
        t.finish("a", 1);
        assert_eq!(t.grant(1), vec![("a".to_owned(), "r".to_owned())]);
        assert_eq!(t.waiting("b"), vec!["s"]);
        t.finish("b", 2);
        assert_eq!(t.grant(2), vec![("b".to_owned(), "s".to_owned())]);
        t.cancel("s");
        t.finish("a", 3);
        t.finish("b", 3);
        t.grant(WINDOW_MS * 2);
        assert!(t.domains.is_empty(), "idle domains are forgotten");
    }
}
