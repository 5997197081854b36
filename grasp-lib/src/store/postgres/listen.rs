//! `LISTEN` on a dedicated connection, for the notifications nodes send each other
//! (events stored, purgatory changed, hunts asked for, curation reloaded).
//!
//! A listener that loses its connection reconnects with a growing pause; notifications
//! sent meanwhile are lost, so every user also catches up some other way (a query on its
//! next request, a periodic refresh).

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;
use tokio_postgres::{AsyncMessage, NoTls};

use super::PostgresDatabase;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long [`listen`] waits for the first `LISTEN` before it lets the caller go on.
const FIRST_LISTEN_WAIT: Duration = Duration::from_secs(15);

/// Listens on `channel` for as long as the process runs, calling `handle` with each
/// payload (one at a time, in order). Resolves once the first `LISTEN` is in place (or
/// failed: the listener goes on retrying in the background), so notifications sent after
/// it are not missed.
pub async fn listen<F, Fut>(db: PostgresDatabase, channel: &'static str, handle: F)
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (listening, ready) = oneshot::channel();
    tokio::spawn(async move {
        let mut listening = Some(listening);
        let mut backoff = Duration::from_millis(250);
        loop {
            match listen_once(&db, channel, &handle, &mut listening).await {
                Ok(()) => {
                    tracing::warn!(channel, "a PostgreSQL notification connection closed; reconnecting")
                }
                Err(e) => {
                    tracing::warn!(channel, error = %e, "listening for PostgreSQL notifications failed; reconnecting")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    if !matches!(tokio::time::timeout(FIRST_LISTEN_WAIT, ready).await, Ok(Ok(()))) {
        tracing::warn!(
            channel,
            "not listening for other nodes' notifications yet; retrying in the background"
        );
    }
}

/// One connection's life: `LISTEN`, then every notification until the connection ends.
async fn listen_once<F, Fut>(
    db: &PostgresDatabase,
    channel: &str,
    handle: &F,
    listening: &mut Option<oneshot::Sender<()>>,
) -> Result<(), tokio_postgres::Error>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
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
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    if let Some(listening) = listening.take() {
        let _ = listening.send(());
    }
    tracing::debug!(channel, "listening for other nodes' notifications");
    while let Some(payload) = rx.recv().await {
        handle(payload).await;
    }
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
