//! The LMDB store survives a restart (including SIGKILL).

use grasp_tests::events::{self, coordinate};
use grasp_tests::{fetch, publish, TestServer};
use nostr_sdk::prelude::*;

#[tokio::test]
async fn restart_serves_the_same_events() {
    let mut server = TestServer::start();
    let owner = Keys::generate();
    let ann = events::announcement(&owner, "repo", &server.addr, &[]);
    let issue = events::issue(&Keys::generate(), &coordinate(&owner.public_key(), "repo"));
    {
        let client = server.client().await;
        publish(&client, &ann).await.unwrap();
        publish(&client, &issue).await.unwrap();
    }
    server.restart();
    let client = server.client().await;
    let mut ids: Vec<EventId> = fetch(&client, Filter::new()).await.iter().map(|e| e.id).collect();
    ids.sort();
    let mut expected = vec![ann.id, issue.id];
    expected.sort();
    assert_eq!(ids, expected);
    // and the policy still knows the repository: a new issue is accepted
    publish(&client, &events::issue(&Keys::generate(), &coordinate(&owner.public_key(), "repo")))
        .await
        .expect("repository still hosted after restart");
}
