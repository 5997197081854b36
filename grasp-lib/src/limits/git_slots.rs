//! How many git processes serving clients may run at once: in total and per client address
//! group. A request over a cap waits briefly for a slot (a burst of clones queues rather
//! than fails); one that still finds none is answered `503` with `Retry-After`, so the
//! machine is never asked to run more `git upload-pack`/`receive-pack` than it can.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// The caps and how long a request waits for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GitSlotLimits {
    /// Git processes serving clients at once (0: no cap).
    pub total: usize,
    /// Of those, per client address group (0: no cap).
    pub per_client: usize,
    /// How long a request waits for a slot before it is refused.
    pub wait: Duration,
}

impl Default for GitSlotLimits {
    fn default() -> Self {
        Self { total: 32, per_client: 8, wait: Duration::from_secs(5) }
    }
}

/// Why no slot was given: the answer is `503` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GitBusy {
    /// Every slot is taken.
    #[error("the server is running as many git processes as it may ({0}); try again in a few seconds")]
    Total(usize),
    /// The client's share is taken.
    #[error("your address already runs {0} git operations here; try again when one has finished")]
    PerClient(usize),
}

impl GitBusy {
    /// Low-cardinality label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            GitBusy::Total(_) => "total",
            GitBusy::PerClient(_) => "per_client",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Shared {
    limits: GitSlotLimits,
    counts: Mutex<Counts>,
    freed: Notify,
}

/// The git process slots of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GitSlots {
    shared: Arc<Shared>,
}

/// One running git process's slot; given back when dropped.
#[derive(Debug)]
pub struct GitSlot {
    shared: Arc<Shared>,
    client: Option<IpAddr>,
}

impl Drop for GitSlot {
    fn drop(&mut self) {
        {
            let mut counts = self.shared.counts.lock().expect("git slots poisoned");
            counts.total -= 1;
            if let Some(client) = self.client {
                if let Some(n) = counts.per_client.get_mut(&client) {
                    *n -= 1;
                    if *n == 0 {
                        counts.per_client.remove(&client);
                    }
                }
            }
        }
        self.shared.freed.notify_waiters();
    }
}

impl GitSlots {
    /// Slots under `limits`.
    pub fn new(limits: GitSlotLimits) -> Self {
        Self { shared: Arc::new(Shared { limits, counts: Mutex::default(), freed: Notify::new() }) }
    }

    /// Git processes running now.
    pub fn running(&self) -> usize {
        self.shared.counts.lock().expect("git slots poisoned").total
    }

    fn try_take(&self, client: Option<IpAddr>) -> Result<GitSlot, GitBusy> {
        let limits = self.shared.limits;
        let client = client.map(crate::rate_limit::address_group);
        let mut counts = self.shared.counts.lock().expect("git slots poisoned");
        if limits.total > 0 && counts.total >= limits.total {
            return Err(GitBusy::Total(limits.total));
        }
        if let Some(client) = client.filter(|_| limits.per_client > 0) {
            if counts.per_client.get(&client).copied().unwrap_or(0) >= limits.per_client {
                return Err(GitBusy::PerClient(limits.per_client));
            }
        }
        counts.total += 1;
        if let Some(client) = client {
            *counts.per_client.entry(client).or_default() += 1;
        }
        Ok(GitSlot { shared: self.shared.clone(), client })
    }

    /// A slot for a git process serving `client` (its address, when known), waiting up to
    /// the configured time for one to free up.
    pub async fn acquire(&self, client: Option<IpAddr>) -> Result<GitSlot, GitBusy> {
        let deadline = tokio::time::Instant::now() + self.shared.limits.wait;
        loop {
            // Registered before trying, so a slot freed in between is not missed.
            let freed = self.shared.freed.notified();
            match self.try_take(client) {
                Ok(slot) => return Ok(slot),
                Err(busy) => {
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return Err(busy);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn caps_hold_and_a_freed_slot_goes_to_a_waiter() {
        let slots = GitSlots::new(GitSlotLimits { total: 2, per_client: 1, wait: Duration::from_secs(5) });
        let a = slots.acquire(ip("10.0.0.1")).await.unwrap();
        assert_eq!(slots.acquire(ip("10.0.0.1")).await.unwrap_err(), GitBusy::PerClient(1));
        let b = slots.acquire(ip("10.0.0.2")).await.unwrap();
        assert_eq!(slots.acquire(None).await.unwrap_err(), GitBusy::Total(2), "after waiting 5 s");
        // A waiter gets the slot as soon as one is given back.
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(ip("10.0.0.3")).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(a);
        assert!(waiter.await.unwrap());
        drop(b);
        assert_eq!(slots.running(), 0, "every slot given back");
    }

    #[tokio::test]
    async fn an_ipv6_slash_64_is_one_client_and_zero_means_no_cap() {
        let slots = GitSlots::new(GitSlotLimits { total: 0, per_client: 1, wait: Duration::ZERO });
        let _one = slots.acquire(ip("2001:db8::1")).await.unwrap();
        assert!(slots.acquire(ip("2001:db8::2")).await.is_err());
        assert!(slots.acquire(ip("2001:db8:0:1::1")).await.is_ok());
    }
}
