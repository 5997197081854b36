//! A client that stops reading is never skipped silently: once it falls behind by more than
//! the subscriber queue, its live subscriptions are closed with a reason.
//! Real relay engine, real in-memory store; the transport is a pair of channels.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use grasp_lib::limits::KeepAlive;
use grasp_lib::metrics::Metrics;
use grasp_lib::policy::AcceptAll;
use grasp_lib::relay::connection::{drive, Inbound, Outbound};
use grasp_lib::relay::{Relay, RelayLimits};
use grasp_lib::store::EventStore;
use nostr::{EventBuilder, Keys};
use serde_json::Value;

async fn next(rx: &mut mpsc::Receiver<Outbound>) -> Value {
    let text = tokio::time::timeout(Duration::from_secs(10), rx.next())
        .await
        .expect("message in time")
        .expect("open");
    let Outbound::Text(text) = text else { panic!("keep-alive is off, yet a ping came") };
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn lagging_subscriber_gets_closed_with_a_reason() {
    let limits = RelayLimits { subscriber_queue: 16, ..RelayLimits::default() };
    let relay =
        Arc::new(Relay::with_store(EventStore::memory(), Arc::new(AcceptAll), limits, Metrics::new()));
    let (client_tx, client_rx) = mpsc::unbounded::<Inbound>();
    let (server_tx, mut server_rx) = mpsc::channel::<Outbound>(0);
    let session = relay.session("127.0.0.1".parse().unwrap());
    let driver = {
        let relay = relay.clone();
        tokio::spawn(async move { drive(session, &relay, client_rx, server_tx, KeepAlive::OFF).await })
    };

    client_tx.unbounded_send(Inbound::Text(r#"["REQ","live",{"kinds":[1],"limit":0}]"#.into())).unwrap();
    assert_eq!(next(&mut server_rx).await, serde_json::json!(["EOSE", "live"]));

    // The client stops reading while 200 events are published.
    let keys = Keys::generate();
    for i in 0..200 {
        relay.broadcast(EventBuilder::text_note(format!("n{i}")).sign_with_keys(&keys).unwrap());
    }

    let mut delivered = 0;
    let reason = loop {
        let msg = next(&mut server_rx).await;
        match msg[0].as_str() {
            Some("EVENT") => delivered += 1,
            Some("CLOSED") => {
                assert_eq!(msg[1], "live");
                break msg[2].as_str().unwrap().to_owned();
            }
            other => panic!("unexpected {other:?}: {msg}"),
        }
    };
    assert!(reason.starts_with("error: subscriber too slow"), "{reason}");
    assert!(delivered < 200, "some events must have been missed for a lag to happen");
    assert_eq!(relay.metrics().slow_subscriptions_closed.get(), 1);

    // After the CLOSED the subscription is gone, and the connection still works. Drain
    // everything the driver still sends until it ends: nothing may be for "live".
    client_tx.unbounded_send(Inbound::Text(r#"["REQ","probe",{"kinds":[7]}]"#.into())).unwrap();
    drop(client_tx);
    let mut rest = Vec::new();
    while let Some(Outbound::Text(text)) =
        tokio::time::timeout(Duration::from_secs(10), server_rx.next()).await.expect("driver ends")
    {
        rest.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    assert!(rest.iter().all(|m| m[1] != "live"), "closed subscription delivered again: {rest:?}");
    assert!(rest.contains(&serde_json::json!(["EOSE", "probe"])), "{rest:?}");
    driver.await.unwrap();
}
