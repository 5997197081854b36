//! Relay sync, tag variations: every tag that relates an event to a hosted repository
//! (`a`, `A`, `q` with its coordinate) or to a root event (`e`, `E`, `q` with its id) brings
//! the event over. The events are published after B connected (live sync; tag matching
//! is the same for historic sync, which `sync_historic` covers).

use grasp_tests::events;
use grasp_tests::sync::{publish, wait_for_event, Pair};
use nostr_sdk::prelude::*;

#[tokio::test]
async fn layer2_a_upper_a_and_q_tags_each_sync() {
    let pair = Pair::start(&[]).await;
    let author = Keys::generate();
    let coordinate = &pair.repo.coordinate;
    let tagged = [
        ("a", events::tagged(&author, 1621, "a", coordinate)),
        ("A", events::tagged(&author, 1111, "A", coordinate)),
        ("q", events::tagged(&author, 1, "q", coordinate)),
    ];
    for (letter, event) in &tagged {
        publish(&pair.a, event).await.unwrap_or_else(|e| panic!("'{letter}' event refused by A: {e}"));
    }
    for (letter, event) in &tagged {
        wait_for_event(&pair.b, event, &format!("the event tagging the repository with '{letter}' on B"))
            .await;
    }
}

#[tokio::test]
async fn layer3_e_upper_e_and_q_tags_each_sync() {
    let pair = Pair::start(&[]).await;
    let author = Keys::generate();
    let issue = events::issue(&author, &pair.repo.coordinate);
    publish(&pair.a, &issue).await.expect("issue accepted on A");
    wait_for_event(&pair.b, &issue, "the root issue on B").await;
    let root = issue.id.to_hex();
    let tagged = [
        ("e", events::tagged(&author, 1630, "e", &root)),
        ("E", events::tagged(&author, 1111, "E", &root)),
        ("q", events::tagged(&author, 1, "q", &root)),
    ];
    for (letter, event) in &tagged {
        publish(&pair.a, event).await.unwrap_or_else(|e| panic!("'{letter}' event refused by A: {e}"));
    }
    for (letter, event) in &tagged {
        wait_for_event(&pair.b, event, &format!("the event tagging the issue with '{letter}' on B")).await;
    }
}
