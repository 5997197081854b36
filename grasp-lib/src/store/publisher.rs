//! Saving an event and delivering it to live subscribers in one step.

use std::sync::Arc;

use nostr::{Event, JsonUtil};
use nostr_database::SaveEventStatus;

use super::events::{EventStore, StoreError};
use super::live::{LiveEvent, LiveFeed, LiveReceiver, QueueBudget};
use crate::metrics::{kind_label, Metrics};

/// Stores accepted events and delivers them to live subscribers. Shared by the relay (for
/// client EVENTs) and by purgatory (for events released when their git data arrives), so
/// both paths save, count and broadcast the same way.
#[derive(Debug, Clone)]
pub struct Publisher {
    store: EventStore,
    live: LiveFeed,
    metrics: Metrics,
}

impl Publisher {
    /// A publisher over `store` whose subscribers may each have `budget` waiting.
    pub fn new(store: EventStore, metrics: Metrics, budget: QueueBudget) -> Self {
        Self { store, live: LiveFeed::new(budget), metrics }
    }

    /// The store events are saved to.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// A receiver of every event delivered live from now on, with the default budget.
    pub fn subscribe(&self) -> LiveReceiver {
        self.live.subscribe()
    }

    /// [`Publisher::subscribe`] with a budget of its own (an internal consumer).
    pub fn subscribe_with(&self, budget: QueueBudget) -> LiveReceiver {
        self.live.subscribe_with(budget)
    }

    /// Delivers an event to matching live subscriptions (without storing it).
    pub fn broadcast(&self, event: Event) {
        let json = event.as_json();
        self.live.send(Arc::new(LiveEvent { event, json }));
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
