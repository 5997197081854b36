//! Live delivery across nodes: an event one node stores reaches the live subscribers of
//! every node sharing the database.
//!
//! The save transaction sends `NOTIFY grasp_events, '<node>:<event id>[:<event>]'`
//! (delivered by PostgreSQL only when it commits; [`super::notify`]). Every node
//! [listens](super::listen), takes each event another node stored from the payload (or
//! loads it, when it was too large to come along) and hands it to its own live subscribers; notifications of its own
//! saves are skipped, as the saving node already delivered them. What is stored while a
//! listener reconnects is not delivered live (a client sees it on its next query).

use std::sync::Arc;

use nostr::Event;
use nostr_database::NostrDatabase;

use super::notify::{parse, CHANNEL};
use super::PostgresDatabase;

/// Starts listening; resolves once the first `LISTEN` is in place (or failed: the listener
/// goes on retrying in the background), so events stored after it are not missed.
pub async fn start(db: PostgresDatabase, deliver: impl Fn(Event) + Send + Sync + 'static) {
    let deliver = Arc::new(deliver);
    let store = db.clone();
    super::listen::listen(db, CHANNEL, move |payload| {
        let (store, deliver) = (store.clone(), deliver.clone());
        async move {
            let Some(stored) = parse(&payload) else { return };
            if stored.node == store.node() {
                return;
            }
            if let Some(event) = stored.event {
                return deliver(event);
            }
            match store.event_by_id(&stored.id).await {
                Ok(Some(event)) => deliver(event),
                // Replaced or deleted since: nothing to deliver.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, id = %stored.id, "loading an event another node stored failed")
                }
            }
        }
    })
    .await;
}
