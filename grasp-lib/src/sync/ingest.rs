//! Where synced events enter this server: the same two steps as a client's EVENT
//! ([`Relay::submit`]: id and signature checks, then the acceptance policy and purgatory),
//! marked as coming from sync so held events are hunted for after the short sync delay,
//! with a look at the memory of refused events between the two steps.
//!
//! nostr-sdk hands every event a peer sends (after checking its id and signature) to
//! [`SyncAdmission`], which submits it here; nothing else ever re-publishes it. Events
//! this server refuses are remembered ([`RejectedMemory`]); when an event is stored that
//! one of them depended on, the refused one is evaluated again.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use nostr::{Event, EventId, Filter, RelayUrl, SubscriptionId, Timestamp};
use nostr_sdk::pool::policy::{AdmitPolicy, AdmitStatus, PolicyError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::historic::LocalItems;
use super::metrics::SyncMetrics;
use super::peers::PeerUrl;
use super::rejected::{MemoryLimits, Recall, RejectedMemory};
use super::remote::is_rate_limit;
use crate::hosting::Hosting;
use crate::policy::EventSource;
use crate::rate_limit::PerKeyLimit;
use crate::relay::{IngestOutcome, Relay};

/// What became of one synced event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Stored (and delivered to subscribers), or released from purgatory at once.
    Stored,
    /// Held in purgatory until its git data arrives.
    Held,
    /// Already here (stored or held).
    Duplicate,
    /// Refused by the acceptance policy; remembered.
    Rejected,
    /// Refused for a passing reason (`error:`, `rate-limited:`); not remembered.
    Transient,
    /// Refused before and nothing it depends on arrived since; not evaluated again.
    Remembered,
    /// It expired here recently (decision 10); refused without evaluation.
    ExpiredHere,
    /// Its id or signature is wrong; refused, not remembered.
    Forged,
    /// Larger, or with more tags, than a client may send; refused, not remembered.
    OverLimit,
}

impl Ingested {
    /// The `outcome` label of `grasp_sync_peer_events_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ingested::Stored => "stored",
            Ingested::Held => "held",
            Ingested::Duplicate => "duplicate",
            Ingested::Rejected => "rejected",
            Ingested::Transient => "error",
            Ingested::Remembered => "remembered",
            Ingested::ExpiredHere => "expired_here",
            Ingested::Forged => "forged",
            Ingested::OverLimit => "over_limit",
        }
    }

    /// Newly accepted (stored or held).
    pub fn is_new(self) -> bool {
        matches!(self, Ingested::Stored | Ingested::Held)
    }
}

/// Reads the relay's answer: the `OK` flag and its NIP-01 prefix.
fn classify(outcome: &IngestOutcome) -> Ingested {
    let message = outcome.message.as_str();
    if outcome.accepted {
        if message.starts_with("duplicate:") {
            Ingested::Duplicate
        } else if message.starts_with("purgatory:") {
            Ingested::Held
        } else {
            Ingested::Stored
        }
    } else if message.starts_with("error:") || is_rate_limit(message) {
        Ingested::Transient
    } else {
        Ingested::Rejected
    }
}

/// A request to fetch events again from the peer that offered them (they were refused,
/// forgotten, and what they depended on has arrived).
pub type Refetch = (PeerUrl, Vec<EventId>);

/// How fast one peer's events are taken in: the rest wait (the peer's stream is read more
/// slowly), so nothing is lost and no peer can flood the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerBudgets {
    /// Events per minute one peer may send.
    pub events_per_minute: u32,
    /// Events per minute one peer may get newly accepted (stored or held).
    pub accepts_per_minute: u32,
}

impl Default for PeerBudgets {
    fn default() -> Self {
        Self { events_per_minute: 6000, accepts_per_minute: 600 }
    }
}

/// The entry point of synced events.
pub struct SyncIngest {
    relay: Arc<Relay>,
    hosting: Arc<Hosting>,
    memory: Mutex<RejectedMemory>,
    metrics: SyncMetrics,
    refetch: mpsc::UnboundedSender<Refetch>,
    received: PerKeyLimit<PeerUrl>,
    accepted: PerKeyLimit<PeerUrl>,
}

impl std::fmt::Debug for SyncIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncIngest").field("memory", &self.memory).finish_non_exhaustive()
    }
}

impl SyncIngest {
    /// An ingest into `relay` over `hosting`; refetch requests go to `refetch`.
    pub fn new(
        relay: Arc<Relay>,
        hosting: Arc<Hosting>,
        limits: MemoryLimits,
        metrics: SyncMetrics,
        refetch: mpsc::UnboundedSender<Refetch>,
    ) -> Self {
        let memory = Mutex::new(RejectedMemory::new(limits, metrics.clone()));
        let budgets = PeerBudgets::default();
        Self {
            relay,
            hosting,
            memory,
            metrics,
            refetch,
            received: PerKeyLimit::per_minute(budgets.events_per_minute),
            accepted: PerKeyLimit::per_minute(budgets.accepts_per_minute),
        }
    }

    /// The same ingest with these per-peer budgets.
    pub fn with_budgets(mut self, budgets: PeerBudgets) -> Self {
        self.received = PerKeyLimit::per_minute(budgets.events_per_minute);
        self.accepted = PerKeyLimit::per_minute(budgets.accepts_per_minute);
        self
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, RejectedMemory> {
        self.memory.lock().expect("sync memory poisoned")
    }

    /// Submits an event `peer` sent.
    pub async fn submit(&self, peer: &PeerUrl, event: Event) -> Ingested {
        self.metrics.events.inc();
        self.received.wait(peer).await;
        let now = Instant::now();
        // The bounds a client's event meets, then integrity: a forged copy must not make
        // the memory refuse the real event.
        let bounded = self.relay.check_bounds(&event).is_ok();
        let recalled = match bounded.then(|| self.relay.check_integrity(&event)) {
            Some(Ok(())) => Some(self.memory().recall(&event, now)),
            _ => None,
        };
        let ingested = match recalled {
            None if !bounded => Ingested::OverLimit,
            None => Ingested::Forged,
            Some(Recall::ExpiredHere) => Ingested::ExpiredHere,
            Some(Recall::Rejected) => Ingested::Remembered,
            Some(Recall::Unknown) => {
                let outcome = self.relay.ingest_from(event.clone(), EventSource::Sync).await;
                let ingested = classify(&outcome);
                if ingested == Ingested::Rejected {
                    tracing::debug!(event_id = %event.id, url = %peer, reason = %outcome.message, "synced event refused");
                    self.memory().remember(&event, peer, now);
                }
                ingested
            }
        };
        if ingested.is_new() {
            self.metrics.events_synced.inc();
            tracing::debug!(event_id = %event.id, kind = event.kind.as_u16(), url = %peer, outcome = ingested.as_str(), "synced event accepted");
        }
        self.metrics.peer_event(peer.as_str(), ingested.as_str(), ingested.is_new());
        if ingested.is_new() {
            // Counted after the fact: past the budget, this peer's next events wait.
            self.accepted.wait(peer).await;
        }
        ingested
    }

    /// An event was stored here (by anyone): evaluates again the refused events that
    /// waited for it, and asks peers again for those no longer kept in full.
    pub async fn on_stored(&self, event: &Event) {
        let invalidated = self.memory().invalidated_by(event, Instant::now());
        self.resubmit(invalidated.hot).await;
        let mut by_peer: std::collections::BTreeMap<PeerUrl, Vec<EventId>> = Default::default();
        for (peer, id) in invalidated.cold {
            by_peer.entry(peer).or_default().push(id);
        }
        for request in by_peer {
            let _ = self.refetch.send(request);
        }
    }

    /// The feed of stored events skipped some: evaluate every fully kept refusal again.
    pub async fn on_feed_gap(&self) {
        let hot = self.memory().take_all_hot();
        self.resubmit(hot).await;
    }

    async fn resubmit(&self, events: Vec<(PeerUrl, Event)>) {
        for (peer, event) in events {
            let outcome = self.submit(&peer, event).await;
            tracing::debug!(url = %peer, outcome = outcome.as_str(), "refused synced event evaluated again");
        }
    }

    /// A held event expired here: refuse synced copies for a while (decision 10).
    pub fn on_expired(&self, event: &Event) {
        self.memory().expired_here(event, Instant::now());
    }

    /// Drops what the memory kept too long.
    pub fn sweep(&self) {
        self.memory().sweep(Instant::now());
    }
}

impl LocalItems for SyncIngest {
    /// Stored, held and remembered events matching `filter`.
    fn items(&self, filter: &Filter) -> BoxFuture<'_, Vec<(EventId, Timestamp)>> {
        let filter = filter.clone();
        Box::pin(async move {
            let mut items = match self.hosting.store().negentropy_items(filter.clone()).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(error = %e, "reading negentropy items failed");
                    Vec::new()
                }
            };
            items.extend(self.hosting.purgatory().held_items_matching(&filter));
            items.extend(self.memory().negentropy_items(&filter));
            items.sort_unstable();
            items.dedup_by_key(|(id, _)| *id);
            items
        })
    }
}

/// The nostr-sdk admission hook: submits every event a peer sends to [`SyncIngest`] and
/// lets the library go on (its own database only remembers ids).
#[derive(Debug, Clone)]
pub struct SyncAdmission {
    ingest: Arc<SyncIngest>,
}

impl SyncAdmission {
    /// A hook submitting to `ingest`.
    pub fn new(ingest: Arc<SyncIngest>) -> Self {
        Self { ingest }
    }
}

impl AdmitPolicy for SyncAdmission {
    fn admit_event<'a>(
        &'a self,
        relay_url: &'a RelayUrl,
        _subscription_id: &'a SubscriptionId,
        event: &'a Event,
    ) -> nostr::util::BoxedFuture<'a, Result<AdmitStatus, PolicyError>> {
        Box::pin(async move {
            match PeerUrl::parse(relay_url.as_str()) {
                Ok(peer) => {
                    self.ingest.submit(&peer, event.clone()).await;
                }
                Err(e) => tracing::warn!(error = %e, "event from an unknown relay URL ignored"),
            }
            // Always admitted: pagination needs to see every event of a page, whatever
            // this server decided about it.
            Ok(AdmitStatus::success())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(accepted: bool, message: &str) -> IngestOutcome {
        IngestOutcome { accepted, message: message.to_owned() }
    }

    #[test]
    fn answers_are_classified_by_prefix() {
        assert_eq!(classify(&outcome(true, "")), Ingested::Stored);
        assert_eq!(classify(&outcome(true, crate::hosting::PURGATORY_MESSAGE)), Ingested::Held);
        assert_eq!(classify(&outcome(true, crate::hosting::DUPLICATE_HELD_MESSAGE)), Ingested::Duplicate);
        assert_eq!(classify(&outcome(true, "duplicate: already have this event")), Ingested::Duplicate);
        assert_eq!(classify(&outcome(false, "blocked: unrelated")), Ingested::Rejected);
        assert_eq!(classify(&outcome(false, "invalid: bad")), Ingested::Rejected);
        assert_eq!(classify(&outcome(false, "error: store")), Ingested::Transient);
        assert_eq!(classify(&outcome(false, "rate-limited: slow")), Ingested::Transient);
    }
}

/// The real relay and acceptance policy, in process: refused events are remembered and
/// evaluated again when what they depend on is stored.
#[cfg(test)]
mod policy_tests {
    use nostr::{EventBuilder, Keys, Kind, Tag};

    use super::*;
    use crate::config::Config;
    use crate::store::StoreBackend;
    use crate::Grasp;

    /// A server (memory store, sync itself off) and a sync ingest into it.
    struct Setup {
        _dir: tempfile::TempDir,
        grasp: Grasp,
        ingest: SyncIngest,
        refetch: mpsc::UnboundedReceiver<Refetch>,
    }

    async fn setup(limits: MemoryLimits) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            domain: Some("127.0.0.1:7000".into()),
            database_backend: StoreBackend::Memory,
            git_data_path: dir.path().join("repos"),
            relay_data_path: dir.path().join("relay"),
            sync: false,
            ..Config::default()
        };
        let grasp = Grasp::open(config).await.unwrap();
        let metrics = SyncMetrics::register(grasp.metrics().registry());
        let (tx, refetch) = mpsc::unbounded_channel();
        let ingest = SyncIngest::new(grasp.relay().clone(), grasp.hosting().clone(), limits, metrics, tx);
        Setup { _dir: dir, grasp, ingest, refetch }
    }

    fn peer() -> PeerUrl {
        PeerUrl::parse("ws://127.0.0.1:7001").unwrap()
    }

    /// A user's grasp list (10317, accepted from anyone) and a comment on it, which relates
    /// only to it.
    fn list_and_comment() -> (Event, Event) {
        let user = Keys::generate();
        let list = EventBuilder::new(Kind::Custom(10317), "").sign_with_keys(&user).unwrap();
        let comment = EventBuilder::new(Kind::Custom(1111), "nice list")
            .tag(Tag::parse(["A", &format!("10317:{}:", user.public_key().to_hex())]).unwrap())
            .sign_with_keys(&Keys::generate())
            .unwrap();
        (list, comment)
    }

    #[tokio::test]
    async fn a_refused_event_is_evaluated_again_when_its_dependency_is_stored() {
        let mut s = setup(MemoryLimits::default()).await;
        let (list, comment) = list_and_comment();
        assert_eq!(
            s.ingest.submit(&peer(), comment.clone()).await,
            Ingested::Rejected,
            "its parent is not here"
        );
        assert_eq!(
            s.ingest.submit(&peer(), comment.clone()).await,
            Ingested::Remembered,
            "not evaluated twice"
        );
        assert_eq!(s.ingest.submit(&peer(), list.clone()).await, Ingested::Stored);
        s.ingest.on_stored(&list).await; // what the feed of stored events does
        assert!(s.grasp.store().event(&comment.id).await.unwrap().is_some(), "evaluated again and stored");
        assert!(s.refetch.try_recv().is_err(), "nothing to fetch again: it was kept in full");
        let text = s.grasp.metrics().render();
        assert!(text.contains("ngit_sync_rejected_invalidated_total{event_type=\"1111\"} 1"), "{text}");
        assert!(text.contains("ngit_sync_rejected_hot_cache_hits_total{event_type=\"1111\"} 1"), "{text}");
        assert!(text.contains("ngit_sync_events_synced_total 2"), "{text}");
    }

    #[tokio::test]
    async fn forged_synced_events_are_refused_like_a_clients() {
        let s = setup(MemoryLimits::default()).await;
        let (list, _) = list_and_comment();
        let (other, _) = list_and_comment();
        let json = |event: &Event| -> serde_json::Value {
            serde_json::from_str(&nostr::JsonUtil::as_json(event)).unwrap()
        };
        let mut bad_sig = json(&list);
        bad_sig["sig"] = other.sig.to_string().into();
        let mut bad_id = json(&list);
        bad_id["content"] = "changed".into();
        for forged in [bad_sig, bad_id] {
            let forged: Event = serde_json::from_value(forged).unwrap();
            assert_eq!(s.ingest.submit(&peer(), forged).await, Ingested::Forged);
        }
        assert!(s.grasp.store().event(&list.id).await.unwrap().is_none());
        assert_eq!(
            s.ingest.submit(&peer(), list.clone()).await,
            Ingested::Stored,
            "the real event is not blamed"
        );
        let text = s.grasp.metrics().render();
        assert!(
            text.contains("reason=\"bad_signature\"} 1") && text.contains("reason=\"bad_id\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_forgotten_refusal_is_fetched_again_from_its_peer() {
        let mut s =
            setup(MemoryLimits { hot_ttl: std::time::Duration::ZERO, ..MemoryLimits::default() }).await;
        let (list, comment) = list_and_comment();
        assert_eq!(s.ingest.submit(&peer(), comment.clone()).await, Ingested::Rejected);
        assert_eq!(s.ingest.submit(&peer(), list.clone()).await, Ingested::Stored);
        s.ingest.on_stored(&list).await;
        assert_eq!(s.refetch.try_recv().unwrap(), (peer(), vec![comment.id]));
        assert_eq!(
            s.ingest.submit(&peer(), comment).await,
            Ingested::Stored,
            "the fetched copy is evaluated"
        );
    }

    #[tokio::test]
    async fn negentropy_counts_stored_held_and_remembered_events_as_present() {
        let s = setup(MemoryLimits::default()).await;
        let (list, comment) = list_and_comment();
        s.ingest.submit(&peer(), list.clone()).await;
        let (_, refused) = list_and_comment();
        assert_eq!(s.ingest.submit(&peer(), refused.clone()).await, Ingested::Rejected);
        let owner = Keys::generate();
        let npub = nostr::nips::nip19::ToBech32::to_bech32(&owner.public_key()).unwrap();
        let announcement = EventBuilder::new(Kind::Custom(30617), "")
            .tags([
                Tag::identifier("r"),
                Tag::parse(["clone", &format!("http://127.0.0.1:7000/{npub}/r.git")]).unwrap(),
                Tag::parse(["relays", "ws://127.0.0.1:7000"]).unwrap(),
            ])
            .sign_with_keys(&owner)
            .unwrap();
        assert_eq!(s.ingest.submit(&peer(), announcement.clone()).await, Ingested::Held);
        let all = Filter::new().kinds([Kind::Custom(1111), Kind::Custom(10317), Kind::Custom(30617)]);
        let ids: Vec<EventId> = s.ingest.items(&all).await.into_iter().map(|(id, _)| id).collect();
        assert!(
            ids.contains(&list.id) && ids.contains(&refused.id) && ids.contains(&announcement.id),
            "{ids:?}"
        );
        assert!(!ids.contains(&comment.id));
        assert!(s.ingest.items(&Filter::new().kind(Kind::Custom(7))).await.is_empty());
    }
}
