//! The LMDB store survives a restart (including SIGKILL).

use grasp_tests::events::{self, coordinate};
use grasp_tests::{fetch, frontend_tests, host_repository, publish, Frontend};
use nostr_sdk::prelude::*;

async fn restart_serves_the_same_events(frontend: Frontend) {
    let mut server = frontend.start();
    let owner = Keys::generate();
    let issue = events::issue(&Keys::generate(), &coordinate(&owner.public_key(), "repo"));
    let expected = {
        let client = server.client().await;
        host_repository(&server, &client, &owner, "repo", &[]).await;
        publish(&client, &issue).await.unwrap();
        let mut ids: Vec<EventId> = fetch(&client, Filter::new()).await.iter().map(|e| e.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(expected.len(), 3, "announcement, state and issue are served");
    server.restart();
    let client = server.client().await;
    let mut ids: Vec<EventId> = fetch(&client, Filter::new()).await.iter().map(|e| e.id).collect();
    ids.sort();
    assert_eq!(ids, expected);
    // and the policy still knows the repository: a new issue is accepted
    publish(&client, &events::issue(&Keys::generate(), &coordinate(&owner.public_key(), "repo")))
        .await
        .expect("repository still hosted after restart");
}

frontend_tests!(restart_serves_the_same_events,);
