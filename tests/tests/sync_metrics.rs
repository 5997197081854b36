//! Relay sync metrics, read from the real `/metrics`: per-peer connection state, status,
//! failures and attempts, events synced, and the memory of refused events move as sync
//! works.

use grasp_tests::events;
use grasp_tests::sync::{
    addr, metric, metric_sum, publish, relay_label, wait_for_event, wait_metrics, Pair, Repo,
};
use nostr_sdk::prelude::*;

#[tokio::test]
async fn sync_metrics_follow_the_peer_and_count_what_it_brings() {
    let mut pair = Pair::start(&[]).await;
    let grasps = pair.b.nip11().await["supported_grasps"].clone();
    assert!(grasps.as_array().unwrap().contains(&serde_json::json!("GRASP-02")), "{grasps}");
    let label = relay_label(pair.a_port);
    let series = |name: &str| format!("{name}{{{label}}}");
    let connected = wait_metrics(&pair.b, "B connected to A and caught up", |m| {
        metric(m, &series("ngit_sync_relay_connected")) == Some(3.0)
    })
    .await;
    assert_eq!(metric(&connected, &series("ngit_sync_relay_status")), Some(1.0), "healthy");
    assert_eq!(metric(&connected, &series("ngit_sync_relay_failures")), Some(0.0));
    assert_eq!(metric(&connected, "ngit_sync_relays_tracked_total"), Some(1.0));
    assert_eq!(metric(&connected, "ngit_sync_relays_connected_total"), Some(1.0));
    assert_eq!(metric(&connected, "ngit_sync_relays_dead_total"), Some(0.0));
    assert_eq!(
        metric_sum(&connected, "ngit_sync_connection_attempts_total", &[&label, "result=\"success\""]),
        1.0
    );
    let synced = metric(&connected, "ngit_sync_events_synced_total").expect("events synced");
    assert!(synced >= 2.0, "the announcement and state were held: {connected}");
    let received = metric(&connected, "ngit_sync_events_total").expect("events received");

    // An issue: stored through sync.
    let issue = events::issue(&Keys::generate(), &pair.repo.coordinate);
    publish(&pair.a, &issue).await.expect("issue accepted on A");
    wait_for_event(&pair.b, &issue, "the issue on B").await;
    let after_issue = wait_metrics(&pair.b, "B counted the synced issue", |m| {
        metric(m, "ngit_sync_events_synced_total") == Some(synced + 1.0)
    })
    .await;
    assert!(metric(&after_issue, "ngit_sync_events_total").unwrap() > received);
    assert!(metric_sum(&after_issue, "grasp_sync_peer_events_total", &[&label, "outcome=\"stored\""]) >= 1.0);

    // An announcement that does not list B: refused and remembered.
    let foreign = Repo::new("elsewhere", &[addr(pair.a_port)]);
    foreign.host_on(&pair.a).await;
    let refused = wait_metrics(&pair.b, "B remembers the refused announcement", |m| {
        metric(m, "ngit_sync_rejected_hot_cache_current{event_type=\"30617\"}") == Some(1.0)
    })
    .await;
    assert_eq!(metric(&refused, "ngit_sync_rejected_cold_index_current{event_type=\"30617\"}"), Some(1.0));
    assert!(metric_sum(&refused, "grasp_sync_peer_events_total", &[&label, "outcome=\"rejected\""]) >= 1.0);
    assert_eq!(metric(&refused, "ngit_sync_events_synced_total"), Some(synced + 1.0), "nothing new accepted");

    // A goes away: B reports it.
    pair.a.stop();
    let down = wait_metrics(&pair.b, "B sees A gone", |m| {
        metric(m, &series("ngit_sync_relay_connected")) == Some(0.0)
    })
    .await;
    assert_eq!(metric(&down, &series("ngit_sync_relay_status")), Some(2.0), "disconnected: {down}");
    wait_metrics(&pair.b, "B counts the failed reconnects", |m| {
        metric_sum(m, "ngit_sync_connection_attempts_total", &[&label, "result=\"failure\""]) >= 1.0
            && metric(m, &series("ngit_sync_relay_failures")).is_some_and(|n| n >= 1.0)
            && metric(m, "ngit_sync_relays_connected_total") == Some(0.0)
    })
    .await;
}

/// A peer that serves events a client could not send here (too large): relay sync refuses
/// them as it would a client's, keeps none of them, and the server's memory stays small.
#[tokio::test]
async fn a_peers_oversized_events_are_refused_and_not_kept() {
    let (a_port, b_port) = (grasp_tests::sync::free_port(), grasp_tests::sync::free_port());
    // A accepts messages up to 2 MB; B keeps the default 512 KiB.
    let a = grasp_tests::sync::not_syncing(a_port).arg("--max-message-size=2000000").start();
    let repo = Repo::new("big", &[addr(a_port), addr(b_port)]);
    repo.host_on(&a).await;
    let author = Keys::generate();
    let big: Vec<Event> = (0..16)
        .map(|i| {
            EventBuilder::new(Kind::Custom(1621), format!("{i}{}", "x".repeat(900_000)))
                .tags([Tag::parse(["a", &repo.coordinate]).unwrap(), Tag::parse(["subject", "big"]).unwrap()])
                .sign_with_keys(&author)
                .unwrap()
        })
        .collect();
    for event in &big {
        publish(&a, event).await.expect("A takes it");
    }
    let small = grasp_tests::events::issue(&author, &repo.coordinate);
    publish(&a, &small).await.expect("A takes it");

    let b = grasp_tests::sync::syncing(b_port, &[a.ws_url()]).start();
    let rss_before = grasp_tests::memory::rss(b.pid());
    repo.host_on(&b).await;
    wait_for_event(&b, &small, "the small issue synced to B").await;
    let metrics = wait_metrics(&b, "B refused the large ones", |m| {
        metric_sum(m, "grasp_sync_peer_events_total", &["outcome=\"over_limit\""]) >= 16.0
    })
    .await;
    for event in &big {
        assert!(!grasp_tests::sync::serves(&b, event).await, "a refused event is not served");
    }
    assert_eq!(
        metric_sum(&metrics, "ngit_sync_rejected_hot_cache_current", &[]),
        0.0,
        "none kept: {metrics}"
    );
    let grown = grasp_tests::memory::rss(b.pid()).saturating_sub(rss_before);
    assert!(grown < 64 << 20, "B grew by {} MiB for 14 MiB of refused events", grown >> 20);
}
