//! Saving an event and delivering it to live subscribers in one step.

use std::sync::Arc;

use nostr::{Event, JsonUtil};
use nostr_database::SaveEventStatus;
use tokio::sync::broadcast;

use super::events::{EventStore, StoreError};
use crate::metrics::{kind_label, Metrics};

/// A stored event on its way to live subscribers, with its JSON encoded once.
#[derive(Debug)]
pub struct LiveEvent {
    /// The event.
    pub event: Event,
    /// `event.as_json()`, computed once for every subscriber.
    pub json: String,
}

/// Stores accepted events and delivers them to live subscribers. Shared by the relay (for
/// client EVENTs) and by purgatory (for events released when their git data arrives), so
/// both paths save, count and broadcast the same way.
#[derive(Debug, Clone)]
pub struct Publisher {
    store: EventStore,
    live: broadcast::Sender<Arc<LiveEvent>>,
    metrics: Metrics,
}

impl Publisher {
    /// A publisher over `store` whose live buffer holds `queue_len` events.
    pub fn new(store: EventStore, metrics: Metrics, queue_len: usize) -> Self {
        let (live, _) = broadcast::channel(queue_len.max(1));
        Self { store, live, metrics }
    }

    /// The store events are saved to.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// A receiver of every event delivered live from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.live.subscribe()
    }

    /// Delivers an event to matching live subscriptions (without storing it).
    pub fn broadcast(&self, event: Event) {
        let json = event.as_json();
        // No receivers is fine: nobody is listening.
        let _ = self.live.send(Arc::new(LiveEvent { event, json }));
    }

    /// Saves `event`; when it was new, counts it and broadcasts it.
    pub async fn publish(&self, event: &Event) -> Result<SaveEventStatus, StoreError> {
        if event.kind.is_ephemeral() {
            self.broadcast(event.clone());
            return Ok(SaveEventStatus::Success);
        }
        let status = self.store.save(event).await?;
        if status.is_success() {
            self.metrics.events_stored.with_label_values(&[kind_label(event.kind.as_u16())]).inc();
            self.broadcast(event.clone());
        }
        Ok(status)
    }
}
