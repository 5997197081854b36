//! Relay sync, discovery: peers are learned from announcements, including announcements
//! that themselves arrived by sync, so discovery is recursive.

use grasp_tests::events;
use grasp_tests::sync::{
    addr, free_port, metric_sum, not_syncing, publish, relay_label, syncing, wait_for_event, wait_metrics,
    Repo, DISCOVERED,
};
use nostr_sdk::prelude::*;

/// B only knows A. The repository's announcement, which B syncs from A, lists C as well;
/// an issue exists only on C. B connects to C by itself and pulls the issue from there.
#[tokio::test]
async fn b_learns_of_c_from_an_announcement_synced_from_a_and_pulls_from_c() {
    let (a_port, b_port, c_port) = (free_port(), free_port(), free_port());
    let a = not_syncing(a_port).start();
    let c = not_syncing(c_port).start();
    let repo = Repo::new("discovered", &[addr(a_port), addr(b_port), addr(c_port)]);
    repo.host_on(&a).await;
    repo.host_on(&c).await;
    let issue = events::issue(&Keys::generate(), &repo.coordinate);
    publish(&c, &issue).await.expect("issue accepted on C");

    let b = syncing(b_port, &[a.ws_url()]).start();
    wait_for_event(&b, &issue, "the issue that only C has, on B").await;
    let a_label = relay_label(a_port);
    let metrics =
        wait_metrics(&b, "B tracks A and C", |m| metric_sum(m, "ngit_sync_relays_tracked_total", &[]) == 2.0)
            .await;
    // C came from an announcement: it counts under `discovered`, its URL is in no label.
    assert!(
        metric_sum(&metrics, "ngit_sync_connection_attempts_total", &[DISCOVERED, "result=\"success\""])
            >= 1.0
    );
    assert!(metric_sum(&metrics, "grasp_sync_peer_events_total", &[DISCOVERED, "outcome=\"stored\""]) >= 1.0);
    assert!(!metrics.contains(&relay_label(c_port)), "no series names C: {metrics}");
    assert_eq!(
        metric_sum(&metrics, "grasp_sync_peer_events_total", &[&a_label, "outcome=\"stored\""]),
        0.0,
        "the issue came from C, not from A: {metrics}"
    );
    assert!(!metrics.contains(&relay_label(b_port)), "B is never its own peer: {metrics}");
}

/// The same, but the announcement reaches A after B connected: B learns of C live.
#[tokio::test]
async fn a_live_announcement_adds_its_relays_as_peers() {
    let (a_port, b_port, c_port) = (free_port(), free_port(), free_port());
    let a = not_syncing(a_port).start();
    let c = not_syncing(c_port).start();
    let b = syncing(b_port, &[a.ws_url()]).start();
    let a_label = relay_label(a_port);
    wait_metrics(&b, "B connected to A", |m| metric_sum(m, "ngit_sync_relay_connected", &[&a_label]) == 3.0)
        .await;
    let repo = Repo::new("discovered-live", &[addr(a_port), addr(b_port), addr(c_port)]);
    repo.host_on(&c).await;
    let issue = events::issue(&Keys::generate(), &repo.coordinate);
    publish(&c, &issue).await.expect("issue accepted on C");
    repo.host_on(&a).await;

    wait_for_event(&b, &issue, "the issue that only C has, on B").await;
    let metrics = b.metrics().await;
    assert!(
        metric_sum(&metrics, "ngit_sync_connection_attempts_total", &[DISCOVERED, "result=\"success\""])
            >= 1.0
    );
    assert!(!metrics.contains(&relay_label(c_port)), "no series names C: {metrics}");
}
