//! Live sync: the subscriptions that bring a peer's new events as they arrive.
//!
//! They are opened before the historic sync starts, so nothing published meanwhile falls
//! between the two, and ask only for what comes next (`limit: 0`). When the scope grows
//! (a repository released, an issue stored) they are replaced in place, keeping their ids.
//! When the peer closes one, [`on_closed`] says what to do.

use nostr::Filter;

use super::remote::{is_rate_limit, Remote, RemoteError};

/// Prefix of the ids of live subscriptions: `grasp-sync-0`, `grasp-sync-1`, …
pub const SUBSCRIPTION_PREFIX: &str = "grasp-sync-";

/// The live subscriptions open on one connection.
#[derive(Debug, Default)]
pub struct LiveSubscriptions {
    open: Vec<Vec<Filter>>,
}

fn id(n: usize) -> String {
    format!("{SUBSCRIPTION_PREFIX}{n}")
}

impl LiveSubscriptions {
    /// Makes the open subscriptions equal `groups` (one REQ per group): changed ones are
    /// replaced, missing ones opened, extra ones closed.
    pub async fn apply<R: Remote + ?Sized>(
        &mut self,
        remote: &R,
        groups: &[Vec<Filter>],
    ) -> Result<(), RemoteError> {
        for (n, filters) in groups.iter().enumerate() {
            if self.open.get(n) == Some(filters) {
                continue;
            }
            remote.subscribe(id(n), filters.clone()).await?;
            if n < self.open.len() {
                self.open[n] = filters.clone();
            } else {
                self.open.push(filters.clone());
            }
        }
        while self.open.len() > groups.len() {
            self.open.pop();
            remote.unsubscribe(id(self.open.len())).await;
        }
        Ok(())
    }

    /// Closes every subscription (also forgetting them in the client library, so a new
    /// connection starts clean).
    pub async fn close_all<R: Remote + ?Sized>(&mut self, remote: &R) {
        while let Some(_filters) = self.open.pop() {
            remote.unsubscribe(id(self.open.len())).await;
        }
    }

    /// True when `subscription` is one of ours.
    pub fn owns(&self, subscription: &str) -> bool {
        subscription
            .strip_prefix(SUBSCRIPTION_PREFIX)
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < self.open.len())
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// What to do when a peer closes a live subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedAction {
    /// Too many filters in one REQ: use fewer per REQ.
    FewerFilters,
    /// Too many subscriptions: use fewer, and cool down if it said `rate-limited:`.
    FewerSubscriptions {
        /// The peer said `rate-limited:`.
        cool_down: bool,
    },
    /// It rate-limited us: cool down.
    CoolDown,
    /// Anything else (an error, a slow-subscriber cut-off): reconnect later and catch up.
    Reconnect,
}

/// Reads a `CLOSED` reason.
pub fn on_closed(message: &str) -> ClosedAction {
    let lower = message.to_ascii_lowercase();
    let rate_limited = is_rate_limit(message);
    // "too many subscriptions", "max subscriptions reached", "too many REQs", "too many
    // concurrent REQs": all say the same.
    let about_subscriptions = lower.contains("subscription") || lower.contains("reqs");
    if about_subscriptions && (rate_limited || lower.contains("too many") || lower.contains("max")) {
        ClosedAction::FewerSubscriptions { cool_down: rate_limited }
    } else if rate_limited {
        ClosedAction::CoolDown
    } else if lower.contains("filter") && (lower.contains("too many") || lower.contains("max")) {
        ClosedAction::FewerFilters
    } else {
        ClosedAction::Reconnect
    }
}

#[cfg(test)]
mod tests {
    use nostr::Kind;

    use super::*;
    use crate::sync::mock::MockRemote;

    fn group(kinds: &[u16]) -> Vec<Filter> {
        kinds.iter().map(|k| Filter::new().kind(Kind::Custom(*k)).limit(0)).collect()
    }

    #[tokio::test]
    async fn only_changed_subscriptions_are_sent_again() {
        let remote = MockRemote::new(Vec::new());
        let mut live = LiveSubscriptions::default();
        live.apply(&remote, &[group(&[1]), group(&[2, 3])]).await.unwrap();
        live.apply(&remote, &[group(&[1]), group(&[2, 3, 4]), group(&[5])]).await.unwrap();
        live.apply(&remote, &[group(&[1])]).await.unwrap();
        assert!(live.owns("grasp-sync-0") && !live.owns("grasp-sync-1") && !live.owns("other"));
        live.close_all(&remote).await;
        assert!(live.is_empty());
        assert_eq!(
            remote.calls(),
            [
                "subscribe grasp-sync-0 1",
                "subscribe grasp-sync-1 2",
                "subscribe grasp-sync-1 3",
                "subscribe grasp-sync-2 1",
                "unsubscribe grasp-sync-2",
                "unsubscribe grasp-sync-1",
                "unsubscribe grasp-sync-0"
            ]
        );
    }

    #[test]
    fn closed_reasons() {
        assert_eq!(
            on_closed("rate-limited: too many open subscriptions (at most 1); CLOSE one first"),
            ClosedAction::FewerSubscriptions { cool_down: true }
        );
        // rust-nostr's relay builder and strfry name REQs, not subscriptions.
        assert_eq!(
            on_closed("rate-limited: too many REQs"),
            ClosedAction::FewerSubscriptions { cool_down: true }
        );
        assert_eq!(
            on_closed("too many concurrent REQs"),
            ClosedAction::FewerSubscriptions { cool_down: false }
        );
        assert_eq!(on_closed("rate-limited: slow down"), ClosedAction::CoolDown);
        assert_eq!(on_closed("invalid: too many filters (12, at most 10)"), ClosedAction::FewerFilters);
        assert_eq!(on_closed("error: subscriber too slow"), ClosedAction::Reconnect);
        assert_eq!(on_closed("blocked: no"), ClosedAction::Reconnect);
    }
}
