//! Relay sync feeds hunting: a state B receives from a peer is marked as synced, so B
//! looks for its git data after the short sync delay rather than waiting for a push.

use grasp_tests::sync::{metric_sum, wait_for_event, wait_metrics, Source};

/// B would wait 10 minutes before hunting for the data of an event a client published;
/// for a synced one it waits 100 ms. The state B syncs from A is released on B by the
/// first hunting attempt for it (one fetch from A, no backoff), and nothing is pushed to B.
#[tokio::test]
async fn a_state_synced_to_b_is_released_by_hunting_within_the_sync_delay_and_one_attempt() {
    let source = Source::start("hunted").await;
    let repo = &source.repo;
    let b = source.b().arg("--hunt-client-delay-ms=600000").arg("--hunt-sync-delay-ms=100").start();
    wait_for_event(&b, &repo.state, "the synced state released on B").await;
    wait_for_event(&b, &repo.announcement, "the synced announcement released with it").await;
    let metrics = wait_metrics(&b, "the hunt is counted", |m| {
        metric_sum(m, "grasp_hunt_fetches_total", &["result=\"objects\""]) >= 1.0
    })
    .await;
    // The announcement arrives a moment before the state; the attempt for it alone has
    // nothing to fetch. The state's attempt fetches once and releases both: no attempt
    // left anything waiting for a backoff.
    assert_eq!(metric_sum(&metrics, "grasp_hunt_attempts_total", &["result=\"waiting\""]), 0.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, "grasp_hunt_fetches_total", &[]), 1.0, "one fetch: {metrics}");
    assert_eq!(metric_sum(&metrics, "grasp_hunt_released_total", &["type=\"state\""]), 1.0, "{metrics}");
    assert_eq!(
        metric_sum(&metrics, "ngit_git_operations_total", &["operation=\"push\""]),
        0.0,
        "nothing was pushed to B: {metrics}"
    );
    assert!(b.purgatory_list().is_empty());
}
