//! Joins a [`Session`] to a transport: reads client messages, writes replies, forwards live
//! events and keeps the connection alive, until either side closes. The connection metrics
//! (open connections, their duration, client IPs, messages sent by type) are counted here,
//! so every transport that hosts the relay counts the same way.
//!
//! Slow clients: while this loop waits on a client that does not read, live events pile up
//! in this connection's own live queue, bounded in events and bytes. When it falls behind by
//! more than that, the queue is dropped, the receiver reports how many events it missed and
//! the session closes its live subscriptions with a reason, so nothing is dropped silently.
//! A REQ's stored events are written a page at a time ([`Session::more`]), each page read
//! from the store only after the previous one is written.
//!
//! Dead and stuck clients ([`KeepAlive`]): every ping interval the loop sends a ping; a
//! connection that stays silent (no pong, no message) for the silence limit, or whose
//! writes do not complete within it, is closed.

use std::time::Duration;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, MissedTickBehavior};

use super::{wire, Session};
use crate::limits::KeepAlive;

/// A frame read from the client, as far as the relay cares.
#[derive(Debug)]
pub enum Inbound {
    /// A text message (NIP-01 JSON).
    Text(String),
    /// A binary message; Nostr does not use them.
    Binary,
    /// The client closed the connection.
    Close,
    /// Ping/pong and other control frames (the transport answers pings; any frame shows
    /// the client is alive).
    Control,
}

/// A frame for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A relay message (NIP-01 JSON).
    Text(String),
    /// A keep-alive ping; the client's pong comes back as [`Inbound::Control`].
    Ping,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed it or went away.
    Closed,
    /// The client stayed silent (no pong, no message) past the silence limit.
    Silent,
    /// A write to the client did not complete within the silence limit.
    WriteStalled,
}

/// Runs one connection to completion and says why it ended.
pub async fn drive<R, W>(
    mut session: Session,
    relay: &super::Relay,
    mut incoming: R,
    mut outgoing: W,
    keep_alive: KeepAlive,
) -> Ended
where
    R: Stream<Item = Inbound> + Unpin,
    W: Sink<Outbound> + Unpin,
{
    let _open = relay.peers().open(session.peer());
    let mut live = relay.subscribe_live();
    // Without keep-alive the ticker never fires and writes never time out.
    let interval = keep_alive.interval.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    let silence = keep_alive.silence_limit();
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    // A private relay speaks first: its NIP-42 challenge.
    let greeting = texts(session.greeting());
    if let Err(e) = send_counted(relay, &mut outgoing, greeting, silence).await {
        return match e {
            SendError::Stalled => Ended::WriteStalled,
            SendError::Closed => Ended::Closed,
        };
    }
    let ended = loop {
        let auth_deadline = session.auth_deadline();
        let replies = tokio::select! {
            frame = incoming.next() => {
                heard = Instant::now();
                match frame {
                    Some(Inbound::Text(text)) => texts(session.receive(&text).await),
                    Some(Inbound::Binary) => {
                        texts(vec![wire::notice("invalid: binary messages are not supported; send JSON text")])
                    }
                    Some(Inbound::Control) => continue,
                    Some(Inbound::Close) | None => break Ended::Closed,
                }
            },
            received = live.recv() => match received {
                Ok(event) => texts(session.on_live(&event)),
                Err(RecvError::Lagged(missed)) => texts(session.on_lagged(missed)),
                Err(RecvError::Closed) => break Ended::Closed,
            },
            // A private relay closes connections that do not authenticate in time.
            _ = tokio::time::sleep_until(auth_deadline.unwrap_or_else(Instant::now)), if auth_deadline.is_some() => {
                break Ended::Closed;
            },
            _ = ticker.tick(), if keep_alive.interval.is_some() => {
                if silence.is_some_and(|limit| heard.elapsed() >= limit) {
                    break Ended::Silent;
                }
                vec![Outbound::Ping]
            },
        };
        // A REQ's answer is written page by page: the next page is read from the store
        // only once the previous one is written.
        let mut replies = Some(replies);
        let mut result = Ok(());
        while let Some(page) = replies.take() {
            result = send_counted(relay, &mut outgoing, page, silence).await;
            if result.is_err() {
                break;
            }
            replies = session.more().await.map(texts);
        }
        match result {
            Ok(()) if session.wants_close() => break Ended::Closed,
            Ok(()) => {}
            Err(SendError::Stalled) => break Ended::WriteStalled,
            Err(SendError::Closed) => break Ended::Closed,
        }
    };
    if ended != Ended::WriteStalled {
        let _ = outgoing.close().await;
    }
    if ended != Ended::Closed {
        let stalled = if ended == Ended::Silent { "websocket_silent" } else { "websocket_write" };
        relay.metrics().timeouts.with_label_values(&[stalled]).inc();
    }
    ended
}

async fn send_counted<W: Sink<Outbound> + Unpin>(
    relay: &super::Relay,
    outgoing: &mut W,
    replies: Vec<Outbound>,
    silence: Option<Duration>,
) -> Result<(), SendError> {
    let sent = relay.metrics();
    for reply in &replies {
        if let Outbound::Text(text) = reply {
            sent.messages_sent.with_label_values(&[wire::message_type(text)]).inc();
        }
    }
    send_all(outgoing, replies, silence).await
}

fn texts(messages: Vec<String>) -> Vec<Outbound> {
    messages.into_iter().map(Outbound::Text).collect()
}

enum SendError {
    Stalled,
    Closed,
}

async fn send_all<W: Sink<Outbound> + Unpin>(
    outgoing: &mut W,
    messages: Vec<Outbound>,
    limit: Option<Duration>,
) -> Result<(), SendError> {
    if messages.is_empty() {
        return Ok(());
    }
    let send = async {
        for message in messages {
            outgoing.feed(message).await?;
        }
        outgoing.flush().await
    };
    match limit {
        Some(limit) => match tokio::time::timeout(limit, send).await {
            Ok(result) => result.map_err(|_| SendError::Closed),
            Err(_) => Err(SendError::Stalled),
        },
        None => send.await.map_err(|_| SendError::Closed),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::channel::mpsc;

    use super::*;
    use crate::metrics::Metrics;
    use crate::policy::AcceptAll;
    use crate::relay::{Relay, RelayLimits};
    use crate::store::EventStore;

    fn relay() -> Arc<Relay> {
        Arc::new(Relay::with_store(
            EventStore::memory(),
            Arc::new(AcceptAll),
            RelayLimits::default(),
            Metrics::new(),
        ))
    }

    fn keep_alive(secs: u64) -> KeepAlive {
        KeepAlive { interval: Some(Duration::from_secs(secs)), missed_pongs: 2 }
    }

    #[tokio::test(start_paused = true)]
    async fn pings_and_closes_a_silent_client() {
        let relay = relay();
        let (_client_tx, incoming) = mpsc::unbounded::<Inbound>();
        let (outgoing, mut sent) = mpsc::unbounded::<Outbound>();
        let started = Instant::now();
        let ended =
            drive(relay.session("127.0.0.1".parse().unwrap()), &relay, incoming, outgoing, keep_alive(10))
                .await;
        assert_eq!(ended, Ended::Silent);
        assert!(started.elapsed() >= Duration::from_secs(20) && started.elapsed() < Duration::from_secs(31));
        assert_eq!(sent.next().await, Some(Outbound::Ping));
        assert_eq!(relay.metrics().timeouts.with_label_values(&["websocket_silent"]).get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pongs_keep_a_quiet_client_connected() {
        let relay = relay();
        let (client_tx, incoming) = mpsc::unbounded::<Inbound>();
        let (outgoing, mut sent) = mpsc::unbounded::<Outbound>();
        let pinger = tokio::spawn(async move {
            let mut pings = 0;
            while let Some(frame) = sent.next().await {
                if frame == Outbound::Ping {
                    pings += 1;
                    if pings == 5 {
                        let _ = client_tx.unbounded_send(Inbound::Close);
                    } else {
                        let _ = client_tx.unbounded_send(Inbound::Control); // the pong
                    }
                }
            }
            pings
        });
        let ended =
            drive(relay.session("127.0.0.1".parse().unwrap()), &relay, incoming, outgoing, keep_alive(10))
                .await;
        assert_eq!(ended, Ended::Closed);
        assert_eq!(pinger.await.unwrap(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_completes_closes_the_connection() {
        let relay = relay();
        let (client_tx, incoming) = mpsc::unbounded::<Inbound>();
        // A sink with room for nothing, never drained: the client does not read.
        let (outgoing, _never_read) = mpsc::channel::<Outbound>(0);
        for _ in 0..4 {
            client_tx.unbounded_send(Inbound::Text(r#"["REQ","s",{"kinds":[1]}]"#.into())).unwrap();
        }
        let ended =
            drive(relay.session("127.0.0.1".parse().unwrap()), &relay, incoming, outgoing, keep_alive(10))
                .await;
        assert_eq!(ended, Ended::WriteStalled);
        assert_eq!(relay.metrics().timeouts.with_label_values(&["websocket_write"]).get(), 1);
    }
}
