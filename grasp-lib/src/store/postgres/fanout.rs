//! Live delivery across nodes: an event one node stores reaches the live subscribers of
//! every node sharing the database.
//!
//! The save transaction sends `NOTIFY grasp_events, '<node>:<event id>'` (delivered by
//! PostgreSQL only when it commits). Every node listens on a dedicated connection, loads
//! each event another node stored and hands it to its own live subscribers; notifications
//! of its own saves are skipped, as the saving node already delivered them. A listener that
//! loses its connection reconnects; what was stored meanwhile is not delivered live (a
//! client sees it on its next query).

use std::time::Duration;

use futures::StreamExt;
use nostr::Event;
use nostr_database::NostrDatabase;
use tokio::sync::oneshot;
use tokio_postgres::{AsyncMessage, NoTls};

use super::notify::{parse, CHANNEL};
use super::PostgresDatabase;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts listening; resolves once the first `LISTEN` is in place (or failed: the listener
/// goes on retrying in the background), so events stored after it are not missed.
pub async fn start(db: PostgresDatabase, deliver: impl Fn(Event) + Send + Sync + 'static) {
    let (listening, ready) = oneshot::channel();
    tokio::spawn(listen(db, deliver, listening));
    match tokio::time::timeout(Duration::from_secs(15), ready).await {
        Ok(Ok(())) => {}
        _ => {
            tracing::warn!("live delivery from other nodes is not listening yet; retrying in the background")
        }
    }
}

async fn listen(
    db: PostgresDatabase,
    deliver: impl Fn(Event) + Send + Sync + 'static,
    listening: oneshot::Sender<()>,
) {
    let mut listening = Some(listening);
    let mut backoff = Duration::from_millis(250);
    loop {
        match listen_once(&db, &deliver, &mut listening).await {
            Ok(()) => tracing::warn!("the live-delivery connection to PostgreSQL closed; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "live delivery from other nodes failed; reconnecting"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: `LISTEN`, then every notification until the connection ends.
async fn listen_once(
    db: &PostgresDatabase,
    deliver: &(impl Fn(Event) + Send + Sync),
    listening: &mut Option<oneshot::Sender<()>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = db.config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(n) = message? {
                if tx.send(n.payload().to_owned()).is_err() {
                    break;
                }
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    if let Some(listening) = listening.take() {
        let _ = listening.send(());
    }
    tracing::debug!("listening for events stored by other nodes");
    while let Some(payload) = rx.recv().await {
        let Some((node, id)) = parse(&payload) else { continue };
        if node == db.node {
            continue;
        }
        match db.event_by_id(&id).await {
            Ok(Some(event)) => deliver(event),
            // Replaced or deleted since: nothing to deliver.
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, %id, "loading an event another node stored failed"),
        }
    }
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
