//! Relay sync, live: events published to a peer after this server connected arrive as
//! they happen, layer 2 (tagging the repository) and layer 3 (tagging a root event).

use grasp_tests::events;
use grasp_tests::sync::{metric_sum, publish, relay_label, wait_for_event, wait_metrics, Pair};
use nostr_sdk::prelude::*;

#[tokio::test]
async fn layer2_and_layer3_events_published_after_b_connected_reach_b() {
    let pair = Pair::start(&[]).await;
    let label = relay_label(pair.a_port);
    // B is connected and caught up before anything below exists on A.
    let before = wait_metrics(&pair.b, "B connected to A and caught up", |m| {
        metric_sum(m, "ngit_sync_relay_connected", &[&label]) == 3.0
    })
    .await;
    let synced_before = metric_sum(&before, "ngit_sync_events_synced_total", &[]);

    let author = Keys::generate();
    let issue = events::issue(&author, &pair.repo.coordinate);
    publish(&pair.a, &issue).await.expect("issue accepted on A");
    wait_for_event(&pair.b, &issue, "the issue (layer 2) on B").await;

    let comment = events::tagged(&author, 1111, "E", &issue.id.to_hex());
    let status = events::tagged(&author, 1632, "e", &issue.id.to_hex());
    publish(&pair.a, &comment).await.expect("comment accepted on A");
    publish(&pair.a, &status).await.expect("status accepted on A");
    wait_for_event(&pair.b, &comment, "the comment (layer 3) on B").await;
    wait_for_event(&pair.b, &status, "the status (layer 3) on B").await;

    let after = pair.b.metrics().await;
    assert!(metric_sum(&after, "ngit_sync_events_synced_total", &[]) >= synced_before + 3.0, "{after}");
    assert_eq!(
        metric_sum(&after, "ngit_sync_connection_attempts_total", &[&label, "result=\"success\""]),
        1.0,
        "one connection served history and live: {after}"
    );
}
