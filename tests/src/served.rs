//! Publishing to a test server and asking whether it serves an event, each over a fresh
//! websocket (nothing from earlier subscriptions can be in flight).

use std::time::Duration;

use nostr_sdk::prelude::*;
use serde_json::json;

use crate::{events, wait_until, RawClient, TestServer};

/// Publishes `event` to `server`: the `OK` flag and message.
pub async fn publish_to(server: &TestServer, event: &Event) -> (bool, String) {
    RawClient::connect(&server.ws_url()).await.publish(&events::json(event)).await
}

/// True when a REQ for `event`'s id returns it (held events are not served).
pub async fn is_served(server: &TestServer, event: &Event) -> bool {
    let mut probe = RawClient::connect(&server.ws_url()).await;
    !probe.req("served?", &[json!({"ids": [event.id.to_hex()]})]).await.unwrap().is_empty()
}

/// Waits (up to a minute) until `server` serves `event`.
pub async fn wait_served(server: &TestServer, event: &Event, what: &str) {
    wait_until(what, Duration::from_secs(60), || async { is_served(server, event).await.then_some(()) })
        .await;
}
