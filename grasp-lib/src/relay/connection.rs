//! Joins a [`Session`] to a transport: reads client messages, writes replies, and forwards
//! live events, until either side closes. The connection metrics (open connections, their
//! duration, client IPs, messages sent by type) are counted here, so every transport that
//! hosts the relay counts the same way.
//!
//! Slow clients: while this loop waits on a client that does not read, live events pile up
//! in the relay's bounded broadcast buffer. When this connection falls behind by more than
//! the buffer, the receiver reports how many it missed and the session closes its live
//! subscriptions with a reason, so nothing is dropped silently.

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::{wire, Session};

/// A frame read from the client, as far as the relay cares.
#[derive(Debug)]
pub enum Inbound {
    /// A text message (NIP-01 JSON).
    Text(String),
    /// A binary message; Nostr does not use them.
    Binary,
    /// The client closed the connection.
    Close,
    /// Ping/pong and other control frames (the transport answers those).
    Control,
}

/// Runs one connection to completion.
pub async fn drive<R, W>(mut session: Session, relay: &super::Relay, mut incoming: R, mut outgoing: W)
where
    R: Stream<Item = Inbound> + Unpin,
    W: Sink<String> + Unpin,
{
    let _open = relay.peers().open(session.peer());
    let mut live = relay.subscribe_live();
    loop {
        let replies = tokio::select! {
            frame = incoming.next() => match frame {
                Some(Inbound::Text(text)) => session.handle(&text).await,
                Some(Inbound::Binary) => vec![wire::notice("invalid: binary messages are not supported; send JSON text")],
                Some(Inbound::Control) => continue,
                Some(Inbound::Close) | None => break,
            },
            received = live.recv() => match received {
                Ok(event) => session.on_live(&event),
                Err(RecvError::Lagged(missed)) => session.on_lagged(missed),
                Err(RecvError::Closed) => break,
            },
        };
        let sent = relay.metrics();
        for reply in &replies {
            sent.messages_sent.with_label_values(&[wire::message_type(reply)]).inc();
        }
        if send_all(&mut outgoing, replies).await.is_err() {
            break;
        }
    }
    let _ = outgoing.close().await;
}

async fn send_all<W: Sink<String> + Unpin>(outgoing: &mut W, messages: Vec<String>) -> Result<(), W::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    for message in messages {
        outgoing.feed(message).await?;
    }
    outgoing.flush().await
}
