//! GRASP-03 Sync Plus from outside: plain rust-nostr relays on 127.0.0.1 act as the user
//! index, people's inboxes and a fallback relay; the server finds the conversations of its
//! repositories there. One inbox allows only 20 subscriptions per connection, and a counter
//! in front of it records the most we ever held open.

use grasp_tests::relays::{PlainRelay, SubscriptionCounter};
use grasp_tests::sync::{metric_sum, wait_for_event, wait_metrics};
use grasp_tests::{events, host_repository, publish, TestServer};
use nostr_sdk::prelude::*;

const D: &str = "plus";

/// A kind 10002 with `(url, marker)` entries (`""`: unmarked).
fn relay_list(keys: &Keys, relays: &[(&str, &str)]) -> Event {
    let tags = relays.iter().map(|(url, marker)| {
        let mut tag = vec!["r", url];
        if !marker.is_empty() {
            tag.push(marker);
        }
        Tag::parse(tag).unwrap()
    });
    EventBuilder::new(Kind::RelayList, "").tags(tags).sign_with_keys(keys).unwrap()
}

/// A NIP-22 comment replying to `root` (an issue).
fn reply(keys: &Keys, root: &Event, text: &str) -> Event {
    EventBuilder::new(Kind::Custom(1111), text)
        .tags([
            Tag::parse(["E", &root.id.to_hex()]).unwrap(),
            Tag::parse(["K", &root.kind.as_u16().to_string()]).unwrap(),
            Tag::parse(["P", &root.pubkey.to_hex()]).unwrap(),
            Tag::parse(["e", &root.id.to_hex()]).unwrap(),
            Tag::parse(["k", &root.kind.as_u16().to_string()]).unwrap(),
            Tag::parse(["p", &root.pubkey.to_hex()]).unwrap(),
        ])
        .sign_with_keys(keys)
        .unwrap()
}

#[tokio::test]
async fn conversations_are_found_in_peoples_inboxes_and_the_fallback() {
    let index = PlainRelay::start(None).await;
    let limited = PlainRelay::start(Some(20)).await;
    let author_inbox = SubscriptionCounter::in_front_of(limited.url()).await;
    let owner_inbox = PlainRelay::start(None).await;
    let fallback = PlainRelay::start(None).await;
    let server = TestServer::builder()
        .arg("--sync=true")
        .arg(format!("--user-index-relays={}", index.url()))
        .arg(format!("--sync-plus-fallback-relays={}", fallback.url()))
        .start();
    assert!(server.nip11().await["supported_grasps"].as_array().unwrap().contains(&"GRASP-03".into()));

    let (owner, author, quiet) = (Keys::generate(), Keys::generate(), Keys::generate());
    // The issue author reads replies at the limited inbox, and so does a crowd of other
    // issue authors (one subscription per person or per issue would pass its limit); the
    // owner reads at their own inbox; `quiet` has no relay list anywhere.
    let crowd: Vec<Keys> = (0..30).map(|_| Keys::generate()).collect();
    let mut lists = vec![
        relay_list(&author, &[(author_inbox.url(), "read"), ("ws://127.0.0.1:9/outbox", "write")]),
        relay_list(&owner, &[(owner_inbox.url(), "read")]),
    ];
    lists.extend(crowd.iter().map(|keys| relay_list(keys, &[(author_inbox.url(), "")])));
    index.publish(&lists.iter().collect::<Vec<_>>()).await;
    let client = server.client().await;
    let coordinate = host_repository(&server, &client, &owner, D, &[]).await;
    let crowd_issues: Vec<Event> = crowd.iter().map(|keys| events::issue(keys, &coordinate)).collect();
    for issue in &crowd_issues {
        publish(&client, issue).await.expect("crowd issue accepted");
    }
    let issue = events::issue(&author, &coordinate);
    publish(&client, &issue).await.expect("issue accepted");
    let quiet_issue = events::issue(&quiet, &coordinate);
    publish(&client, &quiet_issue).await.expect("second issue accepted");

    // Only where the outbox model says they are:
    let answer = reply(&Keys::generate(), &issue, "it works for me");
    limited.publish(&[&answer]).await;
    let unknown = events::issue(&Keys::generate(), &coordinate);
    owner_inbox.publish(&[&unknown]).await;
    let answer_to_quiet = reply(&Keys::generate(), &quiet_issue, "same here");
    fallback.publish(&[&answer_to_quiet]).await;

    wait_for_event(&server, &answer, "the reply in the issue author's inbox").await;
    wait_for_event(&server, &unknown, "the issue in the owner's inbox").await;
    wait_for_event(&server, &answer_to_quiet, "the reply on the fallback relay").await;
    // A reply published there later arrives too (the inbox is followed live).
    let later = reply(&Keys::generate(), &issue, "fixed in main");
    limited.publish(&[&later]).await;
    wait_for_event(&server, &later, "a later reply in the issue author's inbox").await;
    let to_crowd = reply(&Keys::generate(), crowd_issues.last().unwrap(), "me too");
    limited.publish(&[&to_crowd]).await;
    wait_for_event(&server, &to_crowd, "a reply to one of the crowd's issues").await;
    // The people's relay lists are kept (restarts need them), strangers' are not.
    let lists = grasp_tests::RawClient::connect(&server.ws_url())
        .await
        .req("l", &[serde_json::json!({"kinds": [10002]})])
        .await
        .unwrap();
    let authors: Vec<&str> = lists.iter().map(|e| e["pubkey"].as_str().unwrap()).collect();
    assert!(authors.contains(&author.public_key().to_hex().as_str()), "{authors:?}");
    let metrics = wait_metrics(&server, "Sync Plus metrics", |m| {
        metric_sum(m, "grasp_sync_plus_events_total", &["purpose=\"root_inbox\""]) >= 2.0
    })
    .await;
    assert!(metric_sum(&metrics, "grasp_sync_plus_events_total", &["purpose=\"repository_inbox\""]) >= 1.0);
    assert!(metric_sum(&metrics, "grasp_sync_plus_events_total", &["purpose=\"fallback\""]) >= 1.0);
    assert!(metric_sum(&metrics, "grasp_sync_plus_fallback_authors", &[]) >= 1.0, "{metrics}");
    assert!(!metrics.contains("127.0.0.1"), "no relay URL from an event in a label");
    assert!(author_inbox.connections() >= 1);
    assert!(author_inbox.most_open() <= 20, "{} subscriptions at once", author_inbox.most_open());
}

/// Relays taken from people's lists pass the outbound policy: on a server that dials only
/// global addresses, an inbox on 127.0.0.1 gets no connection, while the index relay the
/// operator configured (trusted) is still asked.
#[tokio::test]
async fn relays_from_lists_pass_the_outbound_policy() {
    let index = PlainRelay::start(None).await;
    let inbox = PlainRelay::start(None).await;
    let counter = SubscriptionCounter::in_front_of(inbox.url()).await;
    let server = TestServer::builder()
        .strict_outbound()
        .arg("--sync=true")
        .arg(format!("--user-index-relays={}", index.url()))
        .start();
    let (owner, author) = (Keys::generate(), Keys::generate());
    index
        .publish(&[&relay_list(&author, &[(counter.url(), "")]), &relay_list(&owner, &[(counter.url(), "")])])
        .await;
    let client = server.client().await;
    let coordinate = host_repository(&server, &client, &owner, D, &[]).await;
    publish(&client, &events::issue(&author, &coordinate)).await.expect("issue accepted");
    wait_metrics(&server, "the lists were looked up", |m| {
        metric_sum(m, "grasp_sync_plus_lookups_total", &["result=\"found\""]) >= 2.0
    })
    .await;
    // Give a wrong implementation every chance to dial.
    let metrics = wait_metrics(&server, "a rescan after the lookup", |m| {
        metric_sum(m, "grasp_outbound_refused_total", &["kind=\"relay\""]) >= 1.0
    })
    .await;
    assert_eq!(counter.connections(), 0, "the loopback inbox was dialed:\n{metrics}");
    assert_eq!(metric_sum(&metrics, "grasp_sync_plus_relays", &[]), 0.0);
}
