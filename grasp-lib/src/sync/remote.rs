//! A peer relay as sync sees it: the [`Remote`] trait, and its implementation over a
//! nostr-sdk relay connection.
//!
//! The trait covers what a peer session does (connect, reconcile with negentropy, page
//! with REQ, keep live subscriptions, hear about disconnects and refusals), so the session
//! logic is unit-tested against a mock. Events themselves never come back through the
//! trait: whatever a peer sends is handed to [`super::ingest::SyncIngest`] by the
//! admission hook the connection was built with, exactly once, as it arrives.
//!
//! Sync only pulls: connections are read-only (nostr-sdk refuses to send an `EVENT` on
//! them) and negentropy runs in the "down" direction.

use std::time::Duration;

use futures::future::BoxFuture;
use nostr::{ClientMessage, EventId, Filter, RelayMessage, SubscriptionId, Timestamp};
use nostr_sdk::pool::RelayNotification;
use nostr_sdk::{Relay, RelayStatus, SubscribeOptions, SyncDirection, SyncOptions};
use tokio::sync::{broadcast, Mutex};

/// Why a request to a peer did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The connection is gone.
    #[error("disconnected")]
    Disconnected,
    /// The peer asked us to slow down (`rate-limited:`).
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// The peer does not speak NIP-77 negentropy.
    #[error("negentropy not supported")]
    NegentropyUnsupported,
    /// The peer refused this request (`CLOSED` / `NEG-ERR` with a reason).
    #[error("refused: {0}")]
    Refused(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl RemoteError {
    /// Classifies a refusal message by its NIP-01 prefix.
    pub fn from_refusal(message: &str) -> Self {
        if is_rate_limit(message) {
            RemoteError::RateLimited(message.to_owned())
        } else {
            RemoteError::Refused(message.to_owned())
        }
    }
}

/// True when a relay message tells us to slow down.
pub fn is_rate_limit(message: &str) -> bool {
    message.trim_start().to_ascii_lowercase().starts_with("rate-limited")
}

/// Something the peer did on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The connection closed.
    Disconnected,
    /// The peer closed a subscription, with its reason.
    Closed {
        /// The subscription id.
        subscription: String,
        /// The reason.
        message: String,
    },
    /// A `NOTICE`.
    Notice(String),
}

/// One peer relay (see the module documentation).
pub trait Remote: Send + Sync {
    /// Opens the connection.
    fn connect(&self) -> BoxFuture<'_, Result<(), RemoteError>>;

    /// Closes the connection.
    fn disconnect(&self) -> BoxFuture<'_, ()>;

    /// Reconciles `filter` with NIP-77 negentropy against what we have (`items`), and
    /// fetches what we lack. Returns how many events the peer had that we lacked.
    fn reconcile(
        &self,
        filter: Filter,
        items: Vec<(EventId, Timestamp)>,
    ) -> BoxFuture<'_, Result<usize, RemoteError>>;

    /// One REQ until EOSE; returns `(id, created_at)` of the events received.
    fn fetch(&self, filter: Filter) -> BoxFuture<'_, Result<Vec<(EventId, Timestamp)>, RemoteError>>;

    /// Opens or replaces the live subscription `id`.
    fn subscribe(&self, id: String, filters: Vec<Filter>) -> BoxFuture<'_, Result<(), RemoteError>>;

    /// Closes the live subscription `id`.
    fn unsubscribe(&self, id: String) -> BoxFuture<'_, ()>;

    /// Waits for the next thing the peer does on its own.
    fn next_signal(&self) -> BoxFuture<'_, Signal>;
}

/// A shared peer is a peer (tests keep a handle on what the session drives).
impl<T: Remote + ?Sized> Remote for std::sync::Arc<T> {
    fn connect(&self) -> BoxFuture<'_, Result<(), RemoteError>> {
        (**self).connect()
    }
    fn disconnect(&self) -> BoxFuture<'_, ()> {
        (**self).disconnect()
    }
    fn reconcile(
        &self,
        filter: Filter,
        items: Vec<(EventId, Timestamp)>,
    ) -> BoxFuture<'_, Result<usize, RemoteError>> {
        (**self).reconcile(filter, items)
    }
    fn fetch(&self, filter: Filter) -> BoxFuture<'_, Result<Vec<(EventId, Timestamp)>, RemoteError>> {
        (**self).fetch(filter)
    }
    fn subscribe(&self, id: String, filters: Vec<Filter>) -> BoxFuture<'_, Result<(), RemoteError>> {
        (**self).subscribe(id, filters)
    }
    fn unsubscribe(&self, id: String) -> BoxFuture<'_, ()> {
        (**self).unsubscribe(id)
    }
    fn next_signal(&self) -> BoxFuture<'_, Signal> {
        (**self).next_signal()
    }
}

/// Timeouts of a [`SdkRemote`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteTimeouts {
    /// Opening the websocket.
    pub connect: Duration,
    /// Waiting for the first negentropy answer before deciding the peer lacks NIP-77.
    pub negentropy_probe: Duration,
    /// One reconciliation or REQ page.
    pub request: Duration,
}

impl RemoteTimeouts {
    /// The timeouts of a public server, or the shorter ones a test suite runs with.
    pub fn for_mode(test_mode: bool) -> Self {
        let (connect, request) = if test_mode { (5, 30) } else { (10, 120) };
        Self {
            connect: Duration::from_secs(connect),
            negentropy_probe: Duration::from_secs(connect),
            request: Duration::from_secs(request),
        }
    }
}

/// A peer reached through a nostr-sdk [`Relay`] (read-only, no automatic reconnects: the
/// peer session decides when to try again).
#[derive(Debug)]
pub struct SdkRemote {
    relay: Relay,
    timeouts: RemoteTimeouts,
    notifications: Mutex<Option<broadcast::Receiver<RelayNotification>>>,
}

/// How often a waiting request looks at the connection status.
const STATUS_CHECK: Duration = Duration::from_millis(500);

fn is_down(status: RelayStatus) -> bool {
    matches!(status, RelayStatus::Disconnected | RelayStatus::Terminated | RelayStatus::Banned)
}

fn map_error(e: nostr_sdk::pool::relay::Error) -> RemoteError {
    use nostr_sdk::pool::relay::Error as E;
    match e {
        E::NegentropyNotSupported | E::UnknownNegentropyError => RemoteError::NegentropyUnsupported,
        E::Negentropy(negentropy::Error::UnsupportedProtocolVersion) => RemoteError::NegentropyUnsupported,
        E::NotConnected | E::ReceivedShutdown | E::TerminationRequest | E::Banned => {
            RemoteError::Disconnected
        }
        E::Timeout => RemoteError::Timeout,
        E::RelayMessage(message) => RemoteError::from_refusal(&message),
        other => RemoteError::Other(other.to_string()),
    }
}

impl SdkRemote {
    /// Wraps a relay of the sync client's pool.
    pub fn new(relay: Relay, timeouts: RemoteTimeouts) -> Self {
        Self { relay, timeouts, notifications: Mutex::new(None) }
    }

    /// The connection's status changes are announced once; a request that starts just
    /// after the connection died would wait for an answer that never comes. So requests
    /// check the status before they start and while they wait.
    fn ensure_up(&self) -> Result<(), RemoteError> {
        if is_down(self.relay.status()) {
            Err(RemoteError::Disconnected)
        } else {
            Ok(())
        }
    }

    async fn page(&self, filter: Filter) -> Result<Vec<(EventId, Timestamp)>, RemoteError> {
        let mut notifications = self.relay.notifications();
        self.ensure_up()?;
        let id = SubscriptionId::generate();
        self.relay.send_msg(ClientMessage::req(id.clone(), vec![filter])).map_err(map_error)?;
        let mut found = Vec::new();
        let mut status_check = tokio::time::interval(STATUS_CHECK);
        loop {
            let received = tokio::select! {
                received = notifications.recv() => received,
                _ = status_check.tick() => {
                    self.ensure_up()?;
                    continue;
                }
            };
            match received {
                Ok(RelayNotification::Message { message }) => match message {
                    RelayMessage::Event { subscription_id, event } if *subscription_id == id => {
                        found.push((event.id, event.created_at));
                    }
                    RelayMessage::EndOfStoredEvents(sub) if *sub == id => {
                        let _ = self.relay.send_msg(ClientMessage::close(id));
                        return Ok(found);
                    }
                    RelayMessage::Closed { subscription_id, message } if *subscription_id == id => {
                        return Err(RemoteError::from_refusal(&message));
                    }
                    _ => {}
                },
                Ok(RelayNotification::RelayStatus { status }) if is_down(status) => {
                    return Err(RemoteError::Disconnected)
                }
                Ok(RelayNotification::Shutdown) | Err(broadcast::error::RecvError::Closed) => {
                    return Err(RemoteError::Disconnected)
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Events of this page may have been skipped here (they were still
                    // ingested); the page's oldest timestamp could be wrong, so retry it.
                    return Err(RemoteError::Other("notification backlog; page incomplete".to_owned()));
                }
            }
        }
    }
}

impl Remote for SdkRemote {
    fn connect(&self) -> BoxFuture<'_, Result<(), RemoteError>> {
        Box::pin(async move {
            // Listen before connecting, so a quick drop is not missed.
            *self.notifications.lock().await = Some(self.relay.notifications());
            self.relay.try_connect(self.timeouts.connect).await.map_err(|e| match e {
                nostr_sdk::pool::relay::Error::Timeout => RemoteError::Timeout,
                other => RemoteError::Other(other.to_string()),
            })
        })
    }

    fn disconnect(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.relay.disconnect();
            *self.notifications.lock().await = None;
        })
    }

    fn reconcile(
        &self,
        filter: Filter,
        items: Vec<(EventId, Timestamp)>,
    ) -> BoxFuture<'_, Result<usize, RemoteError>> {
        Box::pin(async move {
            let opts = SyncOptions::new()
                .direction(SyncDirection::Down)
                .initial_timeout(self.timeouts.negentropy_probe);
            self.ensure_up()?;
            let run = self.relay.sync_with_items(filter, items, &opts);
            let result = match tokio::time::timeout(self.timeouts.request, run).await {
                Ok(Ok(reconciliation)) => Ok(reconciliation.remote.len()),
                Ok(Err(e)) => Err(map_error(e)),
                Err(_) => Err(RemoteError::Timeout),
            };
            // A reconciliation cut short by a lost connection (the library waits for the
            // first answer without watching the connection) is not a peer lacking NIP-77.
            if result.is_err() {
                self.ensure_up()?;
            }
            result
        })
    }

    fn fetch(&self, filter: Filter) -> BoxFuture<'_, Result<Vec<(EventId, Timestamp)>, RemoteError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeouts.request, self.page(filter)).await {
                Ok(result) => result,
                Err(_) => Err(RemoteError::Timeout),
            }
        })
    }

    fn subscribe(&self, id: String, filters: Vec<Filter>) -> BoxFuture<'_, Result<(), RemoteError>> {
        Box::pin(async move {
            self.relay
                .subscribe_with_id(SubscriptionId::new(id), filters, SubscribeOptions::default())
                .await
                .map_err(map_error)
        })
    }

    fn unsubscribe(&self, id: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.relay.unsubscribe(&SubscriptionId::new(id)).await;
        })
    }

    fn next_signal(&self) -> BoxFuture<'_, Signal> {
        Box::pin(async move {
            let mut guard = self.notifications.lock().await;
            let Some(notifications) = guard.as_mut() else { return Signal::Disconnected };
            loop {
                match notifications.recv().await {
                    Ok(RelayNotification::RelayStatus { status }) if is_down(status) => {
                        return Signal::Disconnected
                    }
                    Ok(RelayNotification::Shutdown) | Err(broadcast::error::RecvError::Closed) => {
                        return Signal::Disconnected
                    }
                    Ok(RelayNotification::Message {
                        message: RelayMessage::Closed { subscription_id, message },
                    }) => {
                        return Signal::Closed {
                            subscription: subscription_id.to_string(),
                            message: message.into_owned(),
                        }
                    }
                    Ok(RelayNotification::Message { message: RelayMessage::Notice(message) }) => {
                        return Signal::Notice(message.into_owned())
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Busy: events crowded the channel. Whatever we skipped, the
                        // connection state is still known.
                        if is_down(self.relay.status()) {
                            return Signal::Disconnected;
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_classified_by_prefix() {
        assert_eq!(
            RemoteError::from_refusal("rate-limited: slow down"),
            RemoteError::RateLimited("rate-limited: slow down".into())
        );
        assert_eq!(RemoteError::from_refusal("blocked: no"), RemoteError::Refused("blocked: no".into()));
        assert!(is_rate_limit("  Rate-Limited: x"));
        assert!(!is_rate_limit("error: rate-limited upstream"));
    }
}
