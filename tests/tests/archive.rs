//! GRASP-05 archive, black-box: an operator lists what to archive; announcements it names
//! that do not list this server are accepted and their repositories kept read-only, filled
//! from the servers they do list; everything else keeps the GRASP-01 rules.

use std::time::Duration;

use grasp_tests::events;
use grasp_tests::git::{bare_refs, Workdir};
use grasp_tests::served::{is_served, publish_to as publish, wait_served};
use grasp_tests::sync::{free_port, syncing};
use grasp_tests::{host_repository, wait_until, TestServer};
use nostr_sdk::prelude::*;
use serde_json::json;

const D: &str = "repo";
const HELD: &str = "purgatory: won't be served until git data arrives";
const LONG: Duration = Duration::from_secs(60);

fn npub(keys: &Keys) -> String {
    keys.public_key().to_bech32().unwrap()
}

/// An announcement of `identifier` that lists only `home` (clone and relay).
fn listing_only(owner: &Keys, identifier: &str, home: &TestServer) -> Event {
    events::announcement(owner, identifier, &home.addr, &[])
}

/// A state of `owner` for `D` signed `offset` seconds from now.
fn state(owner: &Keys, refs: &[(&str, &str)], offset: u64) -> Event {
    events::state_at(owner, D, refs, Some("main"), Timestamp::from(Timestamp::now().as_secs() + offset))
}

#[tokio::test]
async fn only_what_the_archive_list_names_is_taken_without_listing_us() {
    let home = TestServer::start();
    let (alice, carol, dave, bob) = (Keys::generate(), Keys::generate(), Keys::generate(), Keys::generate());
    let archive = format!("--archive={},{}/only-this,shared-name", npub(&alice), npub(&carol));
    let archiver = TestServer::builder().arg(archive).start();

    for (owner, identifier) in [(&alice, "anything"), (&carol, "only-this"), (&dave, "shared-name")] {
        let ann = listing_only(owner, identifier, &home);
        assert_eq!(publish(&archiver, &ann).await, (true, HELD.to_owned()), "{identifier} is archived");
        assert!(archiver.repo_path(&owner.public_key(), identifier).exists(), "its repository is created");
    }
    for (owner, identifier) in [(&carol, "other"), (&bob, "anything")] {
        let (ok, message) = publish(&archiver, &listing_only(owner, identifier, &home)).await;
        assert!(!ok && message.starts_with("blocked: announcement not hosted"), "{identifier}: {message}");
        assert!(!archiver.repo_path(&owner.public_key(), identifier).exists());
    }

    let nip11 = archiver.nip11().await;
    assert!(nip11["supported_grasps"].as_array().unwrap().contains(&json!("GRASP-05")), "{nip11}");
    let curation = nip11["curation"].as_str().expect("the archive is described");
    assert!(
        curation.contains("read-only archive (GRASP-05)")
            && curation.contains("1 pubkey, 1 repository, 1 identifier"),
        "{curation}"
    );
    // off by default
    let plain = home.nip11().await;
    assert!(!plain["supported_grasps"].as_array().unwrap().contains(&json!("GRASP-05")));
    assert!(plain.get("curation").is_none());
}

#[tokio::test]
async fn an_archived_repository_is_filled_by_hunting_and_refuses_pushes() {
    let home = TestServer::start();
    let archiver = TestServer::builder().arg("--archive=*").start();
    let alice = Keys::generate();
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");

    // hosted read/write at home
    let ann = listing_only(&alice, D, &home);
    let first = state(&alice, &[("refs/heads/main", &c1)], 0);
    assert!(publish(&home, &ann).await.0);
    assert!(publish(&home, &first).await.0);
    work.ok(&["push", &home.clone_url(&alice.public_key(), D), "main"]);
    wait_served(&home, &first, "state served at home").await;

    // the same events reach the archiver (as relay sync would bring them)
    assert_eq!(publish(&archiver, &ann).await, (true, HELD.to_owned()));
    assert_eq!(publish(&archiver, &first).await, (true, HELD.to_owned()));
    wait_served(&archiver, &first, "the archiver found the data at home").await;
    wait_served(&archiver, &ann, "and serves the announcement").await;
    let archived_url = archiver.clone_url(&alice.public_key(), D);
    let path = archiver.repo_path(&alice.public_key(), D);
    wait_until("the archive follows the state", LONG, || {
        let refs = bare_refs(&path).0;
        let c1 = c1.clone();
        async move { (refs == vec![("refs/heads/main".to_owned(), c1)]).then_some(()) }
    })
    .await;
    let reader = Workdir::clone_from(&archived_url, &[]);
    assert_eq!(reader.rev("HEAD"), c1);

    // read-only: no push lands, whatever it carries
    let c2 = work.commit("a", b"2");
    let newer = state(&alice, &[("refs/heads/main", &c2)], 2);
    assert_eq!(publish(&archiver, &newer).await, (true, HELD.to_owned()));
    let out = work.fails(&["push", &archived_url, "main"]);
    assert!(out.contains("read-only archive on this server (GRASP-05)"), "{out}");
    let pr_ref = format!("{c2}:refs/nostr/{}", EventId::from_byte_array([4; 32]).to_hex());
    assert!(work.fails(&["push", &archived_url, &pr_ref]).contains("read-only archive"));

    // kept up to date: the new state's data is pushed at home, the archiver fetches it
    assert!(publish(&home, &newer).await.0);
    work.ok(&["push", &home.clone_url(&alice.public_key(), D), "main"]);
    wait_served(&archiver, &newer, "the newer state is fetched from home").await;
    wait_until("the archive follows the newer state", LONG, || {
        let refs = bare_refs(&path).0;
        let c2 = c2.clone();
        async move { (refs == vec![("refs/heads/main".to_owned(), c2)]).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn repositories_that_list_us_stay_read_write_on_an_archiving_server() {
    let server = TestServer::builder().arg("--archive=*").start();
    let client = server.client().await;
    let alice = Keys::generate();
    host_repository(&server, &client, &alice, D, &[]).await;
    let url = server.clone_url(&alice.public_key(), D);
    let work = Workdir::clone_from(&url, &[]);
    let c2 = work.commit("b", b"2");
    assert!(publish(&server, &state(&alice, &[("refs/heads/main", &c2)], 2)).await.0);
    work.ok(&["push", &url, "main"]);
    assert_eq!(
        bare_refs(&server.repo_path(&alice.public_key(), D)).0,
        vec![("refs/heads/main".to_owned(), c2)]
    );
}

/// Waits until the repository of `owner`/`D` on `server` holds exactly `main` at `commit`.
async fn wait_main(server: &TestServer, owner: &Keys, commit: &str, what: &str) {
    let path = server.repo_path(&owner.public_key(), D);
    let expected = vec![("refs/heads/main".to_owned(), commit.to_owned())];
    wait_until(what, LONG, || {
        let ok = path.exists() && bare_refs(&path).0 == expected;
        async move { ok.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn events_and_git_data_reach_an_archive_through_relay_sync_and_hunting() {
    // Two repositories hosted at home only; the archiver archives alice's.
    let home = TestServer::start();
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    let ann = listing_only(&alice, D, &home);
    let first = state(&alice, &[("refs/heads/main", &c1)], 0);
    let bobs = listing_only(&bob, D, &home);
    for event in [&ann, &first, &bobs] {
        assert!(publish(&home, event).await.0);
    }
    work.ok(&["push", &home.clone_url(&alice.public_key(), D), "main"]);
    wait_served(&home, &first, "alice's state served at home").await;

    let archiver = syncing(free_port(), &[home.ws_url()]).arg(format!("--archive={}", npub(&alice))).start();
    wait_served(&archiver, &first, "the state synced and its data hunted").await;
    wait_served(&archiver, &ann, "the archived announcement released with it").await;
    wait_main(&archiver, &alice, &c1, "the archive follows the state").await;
    assert!(!is_served(&archiver, &bobs).await, "not on the archive list: not taken");
    assert!(!archiver.repo_path(&bob.public_key(), D).exists());
    let out = work.fails(&["push", &archiver.clone_url(&alice.public_key(), D), "main:refs/heads/other"]);
    assert!(out.contains("read-only archive"), "{out}");

    // Kept up to date: a new state at home reaches the archive live, its data by hunting.
    let c2 = work.commit("a", b"2");
    let second = state(&alice, &[("refs/heads/main", &c2)], 2);
    assert!(publish(&home, &second).await.0);
    work.ok(&["push", &home.clone_url(&alice.public_key(), D), "main"]);
    wait_served(&archiver, &second, "the newer state synced and hunted").await;
    wait_main(&archiver, &alice, &c2, "the archive follows the newer state").await;
    assert!(archiver.log().contains("hunting found the git data"), "the data came by hunting");
}
