//! Relay sync terminates: two servers hosting the same repository and syncing from each
//! other settle once both have every event (nothing bounces, no reconnect storm), and an
//! event that expired in purgatory here is not taken back from a peer (decision 10).

use std::time::Duration;

use grasp_tests::events;
use grasp_tests::sync::{
    addr, free_port, metric_sum, publish, relay_label, serves, syncing, wait_for_event, wait_metrics, Repo,
    Source, DISCOVERED, PATIENCE,
};
use grasp_tests::TestServer;
use nostr_sdk::prelude::*;

/// The counters that would move if anything bounced or reconnected.
fn activity(metrics: &str) -> [f64; 4] {
    [
        metric_sum(metrics, "ngit_sync_events_total", &[]),
        metric_sum(metrics, "grasp_sync_peer_events_total", &[]),
        metric_sum(metrics, "ngit_sync_connection_attempts_total", &[]),
        metric_sum(metrics, "ngit_events_stored_total", &[]),
    ]
}

async fn activity_of(server: &TestServer) -> [f64; 4] {
    activity(&server.metrics().await)
}

#[tokio::test]
async fn two_servers_hosting_the_same_repository_settle() {
    let (a_port, b_port) = (free_port(), free_port());
    let a = syncing(a_port, &[]).start();
    let b = syncing(b_port, &[]).start();
    let repo = Repo::new("shared", &[addr(a_port), addr(b_port)]);
    repo.host_on(&a).await;
    repo.host_on(&b).await;
    // Each learned of the other from the announcement: they count under `discovered`.
    for (server, what) in [(&a, "A connected to B"), (&b, "B connected to A")] {
        wait_metrics(server, what, |m| metric_sum(m, "ngit_sync_relays_connected_total", &[]) == 1.0).await;
    }

    let author = Keys::generate();
    let issue = events::issue(&author, &repo.coordinate);
    publish(&a, &issue).await.expect("issue accepted on A");
    wait_for_event(&b, &issue, "A's issue on B").await;
    let comment = events::tagged(&author, 1111, "E", &issue.id.to_hex());
    publish(&b, &comment).await.expect("comment accepted on B");
    wait_for_event(&a, &comment, "B's comment on A").await;

    // Settled: for 3 s in a row nothing moves on either server. A loop (an event bounced
    // back and forth, reconnects) would keep the counters moving until the deadline.
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut last = (activity_of(&a).await, activity_of(&b).await);
    let mut since = std::time::Instant::now();
    while since.elapsed() < Duration::from_secs(3) {
        assert!(std::time::Instant::now() < deadline, "still syncing after {PATIENCE:?}: {last:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = (activity_of(&a).await, activity_of(&b).await);
        if now != last {
            last = now;
            since = std::time::Instant::now();
        }
    }

    for (server, peer_label) in [(&a, &DISCOVERED), (&b, &DISCOVERED)] {
        let m = server.metrics().await;
        assert_eq!(
            metric_sum(&m, "ngit_sync_connection_attempts_total", &[peer_label, "result=\"success\""]),
            1.0,
            "{m}"
        );
        assert_eq!(
            metric_sum(&m, "ngit_sync_connection_attempts_total", &[peer_label, "result=\"failure\""]),
            0.0,
            "{m}"
        );
        assert_eq!(
            metric_sum(&m, "ngit_events_stored_total", &["kind=\"1621\""]),
            1.0,
            "the issue stored once: {m}"
        );
        assert_eq!(
            metric_sum(&m, "ngit_events_stored_total", &["kind=\"1111\""]),
            1.0,
            "the comment stored once: {m}"
        );
    }
}

/// B holds the synced announcement and state of a repository whose git data never comes
/// (hunting is off on B and nobody pushes to it); they expire. A keeps offering them at
/// every reconciliation; B refuses them without holding them again. A client publishing the
/// announcement is heard afresh.
#[tokio::test]
async fn an_event_that_expired_here_is_not_taken_back_from_a_peer() {
    let source = Source::start("expiring").await;
    let repo = &source.repo;
    let b = source
        .b()
        .arg("--hunting=false")
        .arg("--purgatory-expiry-secs=2")
        .arg("--sync-negentropy=false")
        .arg("--sync-full-interval-secs=2")
        .start();
    repo.wait_held_on(&b).await;
    wait_metrics(&b, "the synced announcement and state expired on B", |m| {
        metric_sum(m, "grasp_purgatory_expired_total", &["type=\"announcement\""]) >= 1.0
            && metric_sum(m, "grasp_purgatory_expired_total", &["type=\"state\""]) >= 1.0
    })
    .await;
    let label = relay_label(source.a_port);
    wait_metrics(&b, "B refused A's copy of the expired announcement", |m| {
        metric_sum(m, "grasp_sync_peer_events_total", &[&label, "outcome=\"expired_here\""]) >= 1.0
    })
    .await;
    assert!(b.purgatory_list().is_empty(), "nothing held again: {:?}", b.purgatory_list());
    assert!(!serves(&b, &repo.announcement).await);
    // Decision 10 is about sync only: a client's re-submission is evaluated afresh.
    let answer = publish(&b, &repo.announcement).await.expect("a client's copy is accepted");
    assert!(answer.starts_with("purgatory:"), "{answer}");
}
