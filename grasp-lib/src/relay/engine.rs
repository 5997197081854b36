//! What every connection of one relay shares: the store, the policy, the live fan-out and
//! the limits, and the steps an EVENT goes through.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use nostr::Event;
use nostr_database::{DatabaseEventStatus, RejectedReason, SaveEventStatus};

use super::peers::Peers;
use super::wire;
use crate::access::PrivateAccess;
use crate::metrics::{kind_label, Metrics};
use crate::policy::{EventPolicy, EventSource, Verdict};
use crate::rate_limit::PerIpLimit;
use crate::store::{EventStore, LiveReceiver, Publisher, QueueBudget};

/// Per-connection and per-IP limits (the configuration's `max_message_size`, ... see
/// `Config::relay_limits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Largest client message, in bytes.
    pub max_message_size: usize,
    /// Open subscriptions (and negentropy sessions) per connection.
    pub max_subscriptions: usize,
    /// Filters per REQ.
    pub max_filters: usize,
    /// Largest `limit` honoured, also used when a filter has none.
    pub max_limit: usize,
    /// EVENTs per minute per IP; 0 means unlimited.
    pub events_per_minute: u32,
    /// Live events buffered per connection before its subscriptions are closed.
    pub subscriber_queue: usize,
    /// Bytes of live events buffered per connection before its subscriptions are closed.
    pub subscriber_queue_bytes: usize,
    /// Most records one negentropy session may cover.
    pub max_negentropy_items: usize,
    /// Open connections from one IP above which it counts as a flagged abuser (metrics).
    pub abuser_connection_threshold: usize,
    /// Most tags one event may carry.
    pub max_event_tags: usize,
    /// Most events a COUNT counts; beyond, it answers `approximate`.
    pub max_count: usize,
    /// Most bytes of events one REQ answer carries before EOSE (newest first).
    pub max_req_bytes: usize,
}

impl RelayLimits {
    /// What one connection may have waiting for it.
    pub fn queue_budget(&self) -> QueueBudget {
        QueueBudget { events: self.subscriber_queue, bytes: self.subscriber_queue_bytes }
    }
}

impl Default for RelayLimits {
    /// The limits of a public server. A 512 KiB message fits the largest real NIP-34 patches
    /// (about 150 KiB) with room to spare.
    fn default() -> Self {
        Self {
            max_message_size: 512 * 1024,
            max_subscriptions: 32,
            max_filters: 16,
            max_limit: 500,
            events_per_minute: 600,
            subscriber_queue: 4096,
            subscriber_queue_bytes: 8 * 1024 * 1024,
            max_negentropy_items: 500_000,
            abuser_connection_threshold: 20,
            max_event_tags: 2500,
            max_count: 100_000,
            max_req_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The answer to one EVENT: the `OK` flag and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// `true` when the event was stored, held, or already known.
    pub accepted: bool,
    /// The `OK` message (empty when there is nothing to say).
    pub message: String,
}

impl IngestOutcome {
    fn accepted(message: impl Into<String>) -> Self {
        Self { accepted: true, message: message.into() }
    }

    fn refused(message: impl Into<String>) -> Self {
        Self { accepted: false, message: message.into() }
    }
}

/// What every connection of one relay shares.
pub struct Relay {
    publisher: Publisher,
    policy: Arc<dyn EventPolicy>,
    limits: RelayLimits,
    rate: PerIpLimit,
    peers: Peers,
    metrics: Metrics,
    access: Option<Arc<PrivateAccess>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay publishing through `publisher` and deciding with `policy`.
    pub fn new(
        publisher: Publisher,
        policy: Arc<dyn EventPolicy>,
        limits: RelayLimits,
        metrics: Metrics,
    ) -> Self {
        let rate = PerIpLimit::per_minute(limits.events_per_minute);
        let peers = Peers::new(metrics.clone(), limits.abuser_connection_threshold);
        Metrics::prime(&metrics.messages_received, wire::CLIENT_MESSAGE_TYPES.iter().copied());
        Metrics::prime(&metrics.messages_sent, wire::MESSAGE_TYPES.iter().copied());
        Self { publisher, policy, limits, rate, peers, metrics, access: None }
    }

    /// Makes the relay members-only (GRASP-08): every connection authenticates with NIP-42
    /// before anything else.
    pub fn with_access(mut self, access: Arc<PrivateAccess>) -> Self {
        self.access = Some(access);
        self
    }

    /// Who may use the relay, when it is private.
    pub fn access(&self) -> Option<&Arc<PrivateAccess>> {
        self.access.as_ref()
    }

    /// A relay with its own publisher over `store` (for embedding and tests).
    pub fn with_store(
        store: EventStore,
        policy: Arc<dyn EventPolicy>,
        limits: RelayLimits,
        metrics: Metrics,
    ) -> Self {
        let publisher = Publisher::new(store, metrics.clone(), limits.queue_budget());
        Self::new(publisher, policy, limits, metrics)
    }

    /// The store events are served from.
    pub fn store(&self) -> &EventStore {
        self.publisher.store()
    }

    /// The limits in force.
    pub fn limits(&self) -> &RelayLimits {
        &self.limits
    }

    /// The metrics this relay counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Open connections per client IP.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// A receiver of every event delivered live from now on, with a connection's budget.
    pub fn subscribe_live(&self) -> LiveReceiver {
        self.publisher.subscribe()
    }

    /// [`Relay::subscribe_live`] with a budget of its own (relay sync follows every stored
    /// event and needs more room than a client connection).
    pub fn subscribe_live_with(&self, budget: QueueBudget) -> LiveReceiver {
        self.publisher.subscribe_with(budget)
    }

    /// True when `peer` may send another EVENT now.
    pub fn allow_event_from(&self, peer: IpAddr) -> bool {
        self.rate.allow(peer)
    }

    /// Delivers an event to matching live subscriptions (without storing it).
    pub fn broadcast(&self, event: Event) {
        self.publisher.broadcast(event);
    }

    /// Checks the id and signature of an event from `source`, then ingests it
    /// ([`Relay::ingest_from`]). A client's EVENT enters here; relay sync runs the same two
    /// steps with a look at its memory of refused events between them, so synced events
    /// pass exactly the same checks and policy.
    pub async fn submit(&self, event: Event, source: EventSource) -> IngestOutcome {
        if let Err(refused) = self.check_bounds(&event).and_then(|()| self.check_integrity(&event)) {
            return refused;
        }
        self.ingest_from(event, source).await
    }

    /// The bounds every event meets, whoever brought it (a client or a sync peer): its size
    /// (as JSON, under `max_message_size`) and its number of tags. `Err` is the refusal
    /// (counted).
    pub fn check_bounds(&self, event: &Event) -> Result<(), IngestOutcome> {
        let kind = kind_label(event.kind.as_u16());
        let tags = event.tags.len();
        if tags > self.limits.max_event_tags {
            let max = self.limits.max_event_tags;
            let msg = format!("invalid: the event has {tags} tags; at most {max} are accepted");
            return Err(self.refuse_unverified(kind, "too_many_tags", msg));
        }
        let size = nostr::JsonUtil::as_json(event).len();
        if size > self.limits.max_message_size {
            let max = self.limits.max_message_size;
            let msg = format!("invalid: the event is {size} bytes; at most {max} are accepted");
            return Err(self.refuse_unverified(kind, "too_large", msg));
        }
        Ok(())
    }

    /// The checks [`Relay::submit`] starts with: the id is the hash of the content and the
    /// signature is the author's. `Err` is the refusal (counted).
    pub fn check_integrity(&self, event: &Event) -> Result<(), IngestOutcome> {
        let kind = kind_label(event.kind.as_u16());
        if !event.verify_id() {
            let msg = "invalid: event id does not match the hash of its content";
            return Err(self.refuse_unverified(kind, "bad_id", msg));
        }
        if !event.verify_signature() {
            let msg = "invalid: signature verification failed";
            return Err(self.refuse_unverified(kind, "bad_signature", msg));
        }
        Ok(())
    }

    /// Decides about, stores and broadcasts an event a client published, whose id and
    /// signature were verified.
    pub async fn ingest(&self, event: Event) -> IngestOutcome {
        self.ingest_from(event, EventSource::Client(None)).await
    }

    /// [`Relay::ingest`] for an event from `source`: relay sync submits what it copies from
    /// other relays here, so synced events pass exactly the policy client events pass.
    pub async fn ingest_from(&self, event: Event, source: EventSource) -> IngestOutcome {
        let started = Instant::now();
        let kind = kind_label(event.kind.as_u16());
        self.metrics.events_received.with_label_values(&[kind]).inc();
        let outcome = self.ingest_verified(event, kind, source).await;
        self.metrics.event_duration.observe(started.elapsed().as_secs_f64());
        outcome
    }

    async fn ingest_verified(&self, event: Event, kind: &'static str, source: EventSource) -> IngestOutcome {
        match self.store().status(&event.id).await {
            Ok(DatabaseEventStatus::Saved) => {
                return IngestOutcome::accepted("duplicate: already have this event")
            }
            Ok(DatabaseEventStatus::Deleted) => {
                return self.refuse(kind, "deleted", "blocked: this event was deleted by its author")
            }
            Ok(DatabaseEventStatus::NotExistent) => {}
            Err(e) => {
                tracing::warn!(event_id = %event.id, error = %e, "store status check failed");
                return self.refuse(kind, "store", "error: could not read the event store; try again later");
            }
        }
        match self.policy.evaluate(&event, source).await {
            Verdict::Reject(rejection) => {
                tracing::debug!(event_id = %event.id, kind, reason = rejection.code, "event rejected");
                self.refuse(kind, rejection.code, rejection.wire_message())
            }
            Verdict::Hold { message } => {
                self.metrics.events_held.with_label_values(&[kind]).inc();
                IngestOutcome::accepted(message)
            }
            Verdict::Released => IngestOutcome::accepted(""),
            Verdict::Accept => self.store_and_broadcast(event, kind).await,
        }
    }

    async fn store_and_broadcast(&self, event: Event, kind: &'static str) -> IngestOutcome {
        match self.publisher.publish(&event).await {
            Ok(SaveEventStatus::Success) => {
                if !event.kind.is_ephemeral() {
                    self.policy.stored(&event).await;
                }
                IngestOutcome::accepted("")
            }
            Ok(SaveEventStatus::Rejected(reason)) => match reason {
                RejectedReason::Duplicate => IngestOutcome::accepted("duplicate: already have this event"),
                RejectedReason::Deleted => {
                    self.refuse(kind, "deleted", "blocked: this event was deleted by its author")
                }
                RejectedReason::Replaced => self.refuse(
                    kind,
                    "replaced",
                    "invalid: a newer version of this replaceable event is already stored (or one as new with a lower id)",
                ),
                RejectedReason::InvalidDelete => self.refuse(
                    kind,
                    "foreign_deletion",
                    "invalid: a deletion request may only name events signed by its own author (NIP-09)",
                ),
                RejectedReason::Expired => {
                    self.refuse(kind, "expired", "invalid: event has expired (NIP-40)")
                }
                RejectedReason::Ephemeral | RejectedReason::Other => {
                    self.refuse(kind, "store", "error: the event store refused this event")
                }
            },
            Err(e) => {
                tracing::warn!(event_id = %event.id, error = %e, "saving event failed");
                self.refuse(kind, "store", "error: could not store the event; try again later")
            }
        }
    }

    /// Refuses an EVENT before [`Relay::ingest`] saw it (rate limit, bad id or signature);
    /// it still counts as received.
    pub(crate) fn refuse_unverified(
        &self,
        kind: &'static str,
        code: &str,
        message: impl Into<String>,
    ) -> IngestOutcome {
        self.metrics.events_received.with_label_values(&[kind]).inc();
        self.refuse(kind, code, message)
    }

    pub(crate) fn refuse(&self, kind: &'static str, code: &str, message: impl Into<String>) -> IngestOutcome {
        self.metrics.events_rejected.with_label_values(&[kind, code]).inc();
        IngestOutcome::refused(message)
    }
}
