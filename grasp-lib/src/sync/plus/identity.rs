//! Looking people up: their relay lists (kind 10002) and profiles (kind 0) from the
//! user-index relays, at most [`PlusSettings::batch`] people per query and one query at a
//! time. What the index relays send goes through relay sync's acceptance path like any
//! synced event (only the followed people's lists and profiles are taken), so the lists
//! end up in the store, where [`super::coverage`] reads them, and survive a restart.
//!
//! Someone whose list was found is asked for again after [`PlusSettings::refresh`];
//! someone the index relays answered for without a list is *missing* (the fallback relays
//! cover them) and asked again after [`PlusSettings::retry`]. A failed query leaves the
//! index relays alone for a while, doubling up to an hour; only an answer with an end of
//! stored events counts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr::{Filter, Kind, PublicKey};
use nostr_sdk::{Client, RelayOptions};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{EligibleAuthors, PlusSettings};
use crate::sync::metrics::SyncMetrics;

/// Longest wait after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// When each person was last looked up, and with what result.
#[derive(Debug, Default)]
pub struct IdentityBook {
    state: Mutex<BookState>,
}

#[derive(Debug, Default)]
struct BookState {
    /// Last lookup and whether a list was found.
    checked: HashMap<PublicKey, (Instant, bool)>,
    /// Failed lookups in a row.
    failures: u32,
    /// No lookup before this.
    paused_until: Option<Instant>,
}

impl IdentityBook {
    /// People the index relays answered for without a list (most recent lookup).
    pub fn missing(&self) -> HashSet<PublicKey> {
        let state = self.state.lock().expect("identity book poisoned");
        state.checked.iter().filter(|(_, (_, found))| !found).map(|(pk, _)| *pk).collect()
    }

    /// Who to look up next among `followed`: never looked up first, then those due again;
    /// at most `settings.batch`. Empty while paused after a failure.
    pub fn due(
        &self,
        followed: &HashSet<PublicKey>,
        now: Instant,
        settings: &PlusSettings,
    ) -> Vec<PublicKey> {
        let mut state = self.state.lock().expect("identity book poisoned");
        state.checked.retain(|pk, _| followed.contains(pk));
        if state.paused_until.is_some_and(|until| now < until) {
            return Vec::new();
        }
        let mut never: Vec<PublicKey> =
            followed.iter().filter(|pk| !state.checked.contains_key(pk)).copied().collect();
        never.sort();
        let mut again: Vec<(Instant, PublicKey)> = state
            .checked
            .iter()
            .filter(|(_, (at, found))| {
                now.duration_since(*at) >= if *found { settings.refresh } else { settings.retry }
            })
            .map(|(pk, (at, _))| (*at, *pk))
            .collect();
        again.sort();
        never.into_iter().chain(again.into_iter().map(|(_, pk)| pk)).take(settings.batch.max(1)).collect()
    }

    /// Records an answer for `asked`: `found` had a list. Returns true when someone's
    /// result changed (coverage must be worked out again).
    pub fn answered(&self, asked: &[PublicKey], found: &HashSet<PublicKey>, now: Instant) -> bool {
        let mut state = self.state.lock().expect("identity book poisoned");
        state.failures = 0;
        state.paused_until = None;
        let mut changed = false;
        for pk in asked {
            let has = found.contains(pk);
            let before = state.checked.insert(*pk, (now, has));
            changed |= before.is_none_or(|(_, had)| had != has);
        }
        changed
    }

    /// Records a failed query: lookups pause, `base` doubling per failure in a row.
    pub fn failed(&self, now: Instant, base: Duration) {
        let mut state = self.state.lock().expect("identity book poisoned");
        state.failures = state.failures.saturating_add(1);
        let wait = base.saturating_mul(1 << (state.failures - 1).min(16)).min(MAX_BACKOFF);
        state.paused_until = Some(now + wait);
    }
}

/// Looks people up until `stop`: whenever someone followed is due, one query to every index
/// relay; `changed` is notified when a lookup changed someone's result.
pub async fn run(
    client: Client,
    settings: PlusSettings,
    eligible: EligibleAuthors,
    book: Arc<IdentityBook>,
    changed: Arc<Notify>,
    metrics: SyncMetrics,
    stop: CancellationToken,
) {
    if settings.index.is_empty() {
        tracing::info!("sync plus: no user-index relays configured; relay lists are not looked up");
        return;
    }
    let urls: Vec<_> = settings.index.iter().map(|u| u.relay_url().clone()).collect();
    for url in &urls {
        let options = RelayOptions::new().write(false).reconnect(true).ping(true);
        if let Err(e) = client.pool().add_relay(url.clone(), options).await {
            tracing::warn!(%url, error = %e, "sync plus: cannot use this index relay");
        }
    }
    let tick = settings.retry.min(Duration::from_secs(5)).max(Duration::from_millis(100));
    loop {
        let followed = eligible.snapshot();
        let asked = book.due(&followed, Instant::now(), &settings);
        if !asked.is_empty() {
            for url in &urls {
                let _ = client.try_connect_relay(url.clone(), settings.timeout).await;
            }
            let filter = Filter::new()
                .kinds([Kind::Metadata, Kind::RelayList])
                .authors(asked.iter().copied())
                .limit(asked.len() * 2);
            match client.fetch_events_from(urls.clone(), filter, settings.timeout).await {
                Ok(events) => {
                    let found: HashSet<PublicKey> =
                        events.iter().filter(|e| e.kind == Kind::RelayList).map(|e| e.pubkey).collect();
                    metrics.plus_lookups.with_label_values(&["found"]).inc_by(found.len() as u64);
                    metrics
                        .plus_lookups
                        .with_label_values(&["none"])
                        .inc_by((asked.len() - found.len()) as u64);
                    tracing::debug!(asked = asked.len(), found = found.len(), "sync plus: looked people up");
                    if book.answered(&asked, &found, Instant::now()) {
                        changed.notify_one();
                    }
                }
                Err(e) => {
                    metrics.plus_lookups.with_label_values(&["error"]).inc();
                    tracing::debug!(error = %e, "sync plus: index relays did not answer");
                    book.failed(Instant::now(), settings.source_backoff);
                }
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn people_are_looked_up_once_then_again_when_due() {
        let settings = PlusSettings { batch: 2, ..PlusSettings::for_mode(false) };
        let book = IdentityBook::default();
        let people: Vec<PublicKey> = (0..3).map(|_| Keys::generate().public_key()).collect();
        let followed: HashSet<PublicKey> = people.iter().copied().collect();
        let now = Instant::now();
        let first = book.due(&followed, now, &settings);
        assert_eq!(first.len(), 2, "one batch at most");
        assert!(book.answered(&first, &HashSet::from([first[0]]), now));
        assert_eq!(book.missing(), HashSet::from([first[1]]));
        let second = book.due(&followed, now, &settings);
        assert_eq!(second.len(), 1, "the one never asked");
        book.answered(&second, &HashSet::new(), now);
        assert!(book.due(&followed, now, &settings).is_empty());
        // The missing ones come back after the retry, the found one after the refresh.
        let later = now + settings.retry;
        assert_eq!(book.due(&followed, later, &settings).len(), 2);
        let much_later = now + settings.refresh;
        assert_eq!(book.due(&followed, much_later, &settings).len(), 2, "batch bound");
        // Nobody followed any more: forgotten.
        assert!(book.due(&HashSet::new(), much_later, &settings).is_empty());
        assert!(book.missing().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_pause_lookups_with_a_doubling_wait() {
        let settings = PlusSettings::for_mode(false);
        let book = IdentityBook::default();
        let followed = HashSet::from([Keys::generate().public_key()]);
        let now = Instant::now();
        book.failed(now, settings.source_backoff);
        assert!(book.due(&followed, now, &settings).is_empty());
        assert_eq!(book.due(&followed, now + settings.source_backoff, &settings).len(), 1);
        book.failed(now, settings.source_backoff);
        assert!(
            book.due(&followed, now + settings.source_backoff, &settings).is_empty(),
            "second failure waits twice"
        );
        assert_eq!(book.due(&followed, now + settings.source_backoff * 2, &settings).len(), 1);
    }
}
