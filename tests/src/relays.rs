//! Plain Nostr relays on 127.0.0.1 for tests that need other people's relays (user index,
//! inboxes, outboxes, fallback): rust-nostr's relay builder, in this process, optionally
//! limited in open subscriptions per connection; and a counter that sits in front of one
//! and records the most subscriptions a client ever had open on one connection.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use nostr_relay_builder::prelude::*;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A relay anyone may publish to and read from.
pub struct PlainRelay {
    relay: LocalRelay,
    url: String,
}

impl PlainRelay {
    /// Starts one; `max_reqs` limits the open subscriptions of a connection (the relay
    /// answers more with `CLOSED rate-limited: too many REQs`).
    pub async fn start(max_reqs: Option<usize>) -> Self {
        let mut builder = RelayBuilder::default().addr("127.0.0.1".parse().unwrap());
        if let Some(max_reqs) = max_reqs {
            builder = builder.rate_limit(RateLimit { max_reqs, notes_per_minute: 100_000 });
        }
        let relay = LocalRelay::new(builder);
        relay.run().await.expect("relay runs");
        let url = relay.url().await.to_string().trim_end_matches('/').to_owned();
        Self { relay, url }
    }

    /// `ws://127.0.0.1:<port>`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stores `events` on it.
    pub async fn publish(&self, events: &[&Event]) {
        let client = nostr_sdk::Client::default();
        client.add_relay(&self.url).await.expect("add relay");
        client.connect().await;
        for event in events {
            client.send_event(event).await.expect("the plain relay takes it");
        }
        client.disconnect().await;
    }
}

impl Drop for PlainRelay {
    fn drop(&mut self) {
        self.relay.shutdown();
    }
}

/// Counts the subscriptions (REQs and negentropy sessions) clients hold open on each
/// connection to an upstream relay, and remembers the most ever open at once.
pub struct SubscriptionCounter {
    url: String,
    most: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl SubscriptionCounter {
    /// Listens on 127.0.0.1 and relays every connection to `upstream`.
    pub async fn in_front_of(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        let most: Arc<AtomicUsize> = Arc::default();
        let connections: Arc<AtomicUsize> = Arc::default();
        let upstream = upstream.to_owned();
        let (most_c, connections_c) = (most.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                connections_c.fetch_add(1, Ordering::SeqCst);
                let (upstream, most) = (upstream.clone(), most_c.clone());
                tokio::spawn(async move {
                    let Ok(client) = tokio_tungstenite::accept_async(socket).await else { return };
                    let Ok((server, _)) = tokio_tungstenite::connect_async(&upstream).await else { return };
                    relay_counting(client, server, most).await;
                });
            }
        });
        Self { url, most, connections }
    }

    /// The URL clients use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The most subscriptions one connection ever had open at once.
    pub fn most_open(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    /// Connections made so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn relay_counting<C, S>(client: C, server: S, most: Arc<AtomicUsize>)
where
    C: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<Message>
        + Unpin,
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<Message>
        + Unpin,
{
    let (mut to_client, mut from_client) = client.split();
    let (mut to_server, mut from_server) = server.split();
    let open: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let parse = |text: &str| serde_json::from_str::<Value>(text).ok();
    let key = |v: &Value| -> Option<(String, String)> {
        Some((v.get(0)?.as_str()?.to_owned(), v.get(1)?.as_str()?.to_owned()))
    };
    loop {
        tokio::select! {
            message = from_client.next() => {
                let Some(Ok(message)) = message else { break };
                if let Message::Text(text) = &message {
                    if let Some((kind, sub)) = parse(text).as_ref().and_then(key) {
                        let mut open = open.lock().unwrap();
                        match kind.as_str() {
                            "REQ" => { open.insert(sub); }
                            "NEG-OPEN" => { open.insert(format!("neg:{sub}")); }
                            "CLOSE" => { open.remove(&sub); }
                            "NEG-CLOSE" => { open.remove(&format!("neg:{sub}")); }
                            _ => {}
                        }
                        most.fetch_max(open.len(), Ordering::SeqCst);
                    }
                }
                if to_server.send(message).await.is_err() {
                    break;
                }
            }
            message = from_server.next() => {
                let Some(Ok(message)) = message else { break };
                if let Message::Text(text) = &message {
                    if let Some((kind, sub)) = parse(text).as_ref().and_then(key) {
                        let mut open = open.lock().unwrap();
                        match kind.as_str() {
                            "CLOSED" => { open.remove(&sub); }
                            "NEG-ERR" => { open.remove(&format!("neg:{sub}")); }
                            _ => {}
                        }
                    }
                }
                if to_client.send(message).await.is_err() {
                    break;
                }
            }
        }
    }
}
