//! A server whose data paths are relative (the default `./data/...` is): copying git data
//! between the repositories of one maintainer chain must still work. Found by the outside
//! check (grasp-audit's `accept_recursive_maintainer_announcement_without_service`).

use std::time::Duration;

use grasp_tests::events;
use grasp_tests::git::{bare_refs, Workdir};
use grasp_tests::{fetch, publish, wait_until, TestServer};
use nostr_sdk::prelude::*;

const D: &str = "repo";

/// Alice owns the repository and lists Bob; Bob hosts the same identifier here and lists
/// Carol; Carol's own announcement names another server only. A push authorized by Carol's
/// state lands in Alice's repository, is copied into Bob's, and releases both held
/// announcements, Carol's with them.
#[tokio::test]
async fn maintainer_repositories_get_the_pushed_data_with_relative_data_paths() {
    let server = TestServer::builder().relative_data_paths().start();
    let client = server.client().await;
    let (alice, bob, carol) = (Keys::generate(), Keys::generate(), Keys::generate());
    let addr = &server.addr;

    publish(&client, &events::announcement(&alice, D, addr, &[bob.public_key()])).await.unwrap();
    // Bob accepts Alice's invitation and invites Carol, who accepts (maintainer model v3).
    publish(&client, &events::announcement(&bob, D, addr, &[alice.public_key(), carol.public_key()]))
        .await
        .unwrap();
    // Another server (nothing listens on port 1).
    let carol_npub = carol.public_key().to_bech32().unwrap();
    let elsewhere = events::announcement_with(
        &carol,
        D,
        &[format!("http://127.0.0.1:1/{carol_npub}/{D}.git")],
        &["ws://127.0.0.1:1".to_owned()],
        &[bob.public_key()],
    );
    publish(&client, &elsewhere).await.expect("maintainer companion accepted");

    let work = Workdir::new();
    let c1 = work.commit("README", b"carol");
    publish(&client, &events::state(&carol, D, &[("refs/heads/main", &c1)], Some("main"))).await.unwrap();
    work.ok(&["push", &server.clone_url(&alice.public_key(), D), "main"]);

    let expected = (vec![("refs/heads/main".to_owned(), c1.clone())], "refs/heads/main".to_owned());
    assert_eq!(bare_refs(&server.repo_path(&alice.public_key(), D)), expected);
    let bob_path = server.repo_path(&bob.public_key(), D);
    wait_until("Bob's repository aligned with Carol's state", Duration::from_secs(30), || {
        let refs = bare_refs(&bob_path);
        std::future::ready((refs == expected).then_some(()))
    })
    .await;
    let clone = Workdir::clone_from(&server.clone_url(&bob.public_key(), D), &[]);
    assert_eq!(clone.rev("HEAD"), c1);

    let authors = [bob.public_key(), carol.public_key()];
    wait_until("Bob's and Carol's announcements served", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let filter = Filter::new().kind(Kind::GitRepoAnnouncement).authors(authors).identifier(D);
            (fetch(&client, filter).await.len() == 2).then_some(())
        }
    })
    .await;
    let log = std::fs::read_to_string(server.data_dir().join("server.log")).unwrap();
    assert!(!log.contains("aligning repository failed"), "{log}");
}
