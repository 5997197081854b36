//! Relay sync, historic: events a peer had before this server connected reach it, with
//! NIP-77 negentropy and with REQ pages when negentropy is switched off; announcements
//! that do not list this server stay out.

use grasp_tests::events;
use grasp_tests::sync::{
    addr, free_port, metric_sum, not_syncing, publish, relay_label, serves, syncing, wait_for_event,
    wait_metrics, Repo, Source,
};
use nostr_sdk::prelude::*;

/// A holds a served repository (announced on A and B), an issue and a comment on it
/// before B exists. B starts syncing from A, holds the synced announcement and state until
/// hunting brings their git data from A, then pulls layer 2 (the issue) and layer 3 (the
/// comment). Returns B's metrics text once everything arrived.
async fn history_reaches_b(b_args: &[&str]) -> String {
    let source = Source::start("history").await;
    let (a, repo) = (&source.a, &source.repo);
    let author = Keys::generate();
    let issue = events::issue(&author, &repo.coordinate);
    publish(a, &issue).await.expect("issue accepted on A");
    let comment = events::tagged(&author, 1111, "E", &issue.id.to_hex());
    publish(a, &comment).await.expect("comment accepted on A");

    let mut builder = source.b();
    for arg in b_args {
        builder = builder.arg(*arg);
    }
    let b = builder.start();
    wait_for_event(&b, &repo.announcement, "the announcement released on B").await;
    wait_for_event(&b, &issue, "the issue (layer 2) synced to B").await;
    wait_for_event(&b, &comment, "the comment (layer 3) synced to B").await;
    let label = relay_label(source.a_port);
    wait_metrics(&b, "B counts the events it synced from A", |m| {
        metric_sum(m, "grasp_sync_peer_events_total", &[&label, "outcome=\"stored\""]) >= 2.0
            && metric_sum(m, "grasp_sync_peer_events_total", &[&label, "outcome=\"held\""]) >= 2.0
    })
    .await
}

#[tokio::test]
async fn historic_events_reach_b_with_negentropy() {
    let metrics = history_reaches_b(&[]).await;
    assert!(
        metric_sum(&metrics, "grasp_sync_reconciliations_total", &["method=\"negentropy\"", "result=\"ok\""])
            > 0.0
    );
    assert_eq!(
        metric_sum(&metrics, "grasp_sync_reconciliations_total", &["method=\"req\""]),
        0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn historic_events_reach_b_without_negentropy() {
    let metrics = history_reaches_b(&["--sync-negentropy=false"]).await;
    assert!(
        metric_sum(&metrics, "grasp_sync_reconciliations_total", &["method=\"req\"", "result=\"ok\""]) > 0.0
    );
    assert_eq!(
        metric_sum(&metrics, "grasp_sync_reconciliations_total", &["method=\"negentropy\""]),
        0.0,
        "{metrics}"
    );
}

/// Both announcements are on A and come in the same reconciliation: once B has decided
/// about both (one held, one refused), the one that does not list B is nowhere on B. A
/// later full reconciliation offers it again and B does not evaluate it again.
#[tokio::test]
async fn an_announcement_that_does_not_list_b_is_not_synced() {
    let (a_port, b_port) = (free_port(), free_port());
    let a = not_syncing(a_port).start();
    let listed = Repo::new("listed", &[addr(a_port), addr(b_port)]);
    let unlisted = Repo::new("unlisted", &[addr(a_port)]);
    listed.host_on(&a).await;
    unlisted.host_on(&a).await;
    let b = syncing(b_port, &[a.ws_url()])
        .arg("--sync-negentropy=false")
        .arg("--sync-full-interval-secs=2")
        .start();
    wait_for_event(&b, &listed.announcement, "the listed repository on B").await;
    let label = relay_label(a_port);
    wait_metrics(&b, "B refused the announcement that does not list it", |m| {
        metric_sum(m, "grasp_sync_peer_events_total", &[&label, "outcome=\"rejected\""]) >= 1.0
    })
    .await;
    let unlisted_id = unlisted.announcement.id.to_hex();
    assert!(b.purgatory_list().iter().all(|e| e["event_id"] != unlisted_id), "not held on B");
    assert!(!serves(&b, &unlisted.announcement).await, "not served on B");
    assert!(!b.repo_path(&unlisted.owner.public_key(), "unlisted").exists(), "no repository created on B");
    // Offered again (the next REQ page repeats the oldest second, and a full reconciliation
    // runs every 2 s here): the refused announcement is recognized, not evaluated again.
    wait_metrics(&b, "B recognizes the refused announcement when offered again", |m| {
        metric_sum(m, "grasp_sync_peer_events_total", &[&label, "outcome=\"remembered\""]) >= 1.0
    })
    .await;
    assert!(b.purgatory_list().iter().all(|e| e["event_id"] != unlisted_id));
}
