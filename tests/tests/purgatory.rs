//! Purgatory, black-box: announcements, states and pull requests whose git data is not here
//! are accepted with `OK true` but not served until a push (or other git data) brings it;
//! they expire, can be deleted, and survive a crash.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use grasp_tests::events::{self, coordinate};
use grasp_tests::git::{git, ref_at, waiting_ref, Workdir};
use grasp_tests::{frontend_tests, host_repository, wait_until, Frontend, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::json;

const D: &str = "repo";
const HELD: &str = "purgatory: won't be served until git data arrives";

struct Setup {
    server: TestServer,
    raw: RawClient,
    owner: Keys,
    last: AtomicU64,
}

impl Setup {
    async fn new(server: TestServer) -> Self {
        let raw = RawClient::connect(&server.ws_url()).await;
        // States published through `state()` are strictly newer than anything signed before.
        Self { server, raw, owner: Keys::generate(), last: AtomicU64::new(Timestamp::now().as_secs()) }
    }

    fn url(&self) -> String {
        self.server.clone_url(&self.owner.public_key(), D)
    }

    async fn publish(&mut self, event: &Event) -> (bool, String) {
        self.raw.publish(&events::json(event)).await
    }

    /// A state of the owner, strictly newer than any state signed before it (including the
    /// one `host_repository` signed "now", even when a second boundary passed meanwhile).
    fn state(&self, refs: &[(&str, &str)]) -> Event {
        let at = (Timestamp::now().as_secs() + 1).max(self.last.load(Ordering::SeqCst) + 1);
        self.last.store(at, Ordering::SeqCst);
        events::state_at(&self.owner, D, refs, Some("main"), Timestamp::from(at))
    }

    async fn served(&mut self, event: &Event) -> bool {
        // A fresh connection: nothing from earlier subscriptions can be in flight.
        let mut probe = RawClient::connect(&self.server.ws_url()).await;
        !probe.req("served?", &[json!({"ids": [event.id.to_hex()]})]).await.unwrap().is_empty()
    }
}

/// Reads EVENT messages for `sub` until all `ids` arrived.
async fn expect_live(raw: &mut RawClient, sub: &str, ids: &[EventId]) {
    let mut missing: Vec<String> = ids.iter().map(|id| id.to_hex()).collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !missing.is_empty() {
            let msg = raw.recv().await;
            if msg[0] == "EVENT" && msg[1] == sub {
                missing.retain(|id| msg[2]["id"] != *id);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("live delivery of {ids:?}"));
}

async fn state_and_announcement_are_held_until_the_push_then_served_and_delivered_live(frontend: Frontend) {
    let mut s = Setup::new(frontend.start()).await;
    let mut live = RawClient::connect(&s.server.ws_url()).await;
    live.req("live", &[json!({"kinds": [30617, 30618], "limit": 0})]).await.unwrap();

    let ann = events::announcement(&s.owner, D, &s.server.addr, &[]);
    assert_eq!(s.publish(&ann).await, (true, HELD.to_owned()));
    assert!(s.server.repo_path(&s.owner.public_key(), D).join("HEAD").exists(), "repo exists at once");
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    let state = s.state(&[("refs/heads/main", &c1)]);
    assert_eq!(s.publish(&state).await, (true, HELD.to_owned()));
    let (ok, msg) = s.publish(&state).await;
    assert!(ok && msg.starts_with("duplicate:"), "re-sending a held event: {msg}");
    assert!(!s.served(&ann).await && !s.served(&state).await);

    // introspection while held
    let listed = s.server.purgatory_list();
    let kinds: Vec<&str> = listed.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(kinds.contains(&"announcement") && kinds.contains(&"state"));
    let state_entry = listed.iter().find(|e| e["kind"] == "state").unwrap();
    assert!(state_entry["waiting_for"].as_str().unwrap().contains(&c1[..7]), "{state_entry}");
    assert!(s.server.purgatory_table().contains("WAITING FOR"));
    let metrics = s.server.metrics().await;
    assert!(metrics.contains("grasp_purgatory_held{type=\"state\"} 1"), "{metrics}");
    assert!(metrics.contains("grasp_purgatory_held{type=\"announcement\"} 1"), "{metrics}");

    work.ok(&["push", &s.url(), "main"]);
    assert!(s.served(&ann).await, "announcement served right after the push");
    assert!(s.served(&state).await, "state served right after the push");
    expect_live(&mut live, "live", &[ann.id, state.id]).await;
    assert!(s.server.purgatory_list().is_empty());
    let metrics = s.server.metrics().await;
    assert!(metrics.contains("grasp_purgatory_released_total{type=\"state\"} 1"), "{metrics}");
    assert!(metrics.contains("grasp_purgatory_released_total{type=\"announcement\"} 1"), "{metrics}");
}

async fn state_whose_objects_are_here_is_served_at_once(frontend: Frontend) {
    let mut s = Setup::new(frontend.start()).await;
    let client = s.server.client().await;
    host_repository(&s.server, &client, &s.owner, D, &[]).await;
    let main = git(&s.server.repo_path(&s.owner.public_key(), D), &["rev-parse", "main"]);
    let c1 = String::from_utf8_lossy(&main.stdout).trim().to_owned();
    let next = s.state(&[("refs/heads/main", &c1), ("refs/heads/release", &c1)]);
    assert_eq!(s.publish(&next).await, (true, String::new()), "served, not held");
    assert!(s.served(&next).await);
}

async fn pull_requests_in_both_orders_and_mismatching_commits(frontend: Frontend) {
    let mut s = Setup::new(frontend.start()).await;
    let client = s.server.client().await;
    let repo = host_repository(&s.server, &client, &s.owner, D, &[]).await;
    let repo_path = s.server.repo_path(&s.owner.public_key(), D);
    let work = Workdir::clone_from(&s.url(), &[]);
    // A fresh contributor for each PR keeps the events (and their ids) distinct.
    let contributor = Keys::generate;
    let p1 = work.commit("pr1", b"one");
    let p2 = work.commit("pr2", b"two");
    let ref_on_disk = |id: &EventId| ref_at(&repo_path, &format!("refs/nostr/{}", id.to_hex()));
    let waiting_on_disk = |id: &EventId| ref_at(&repo_path, &waiting_ref(&id.to_hex()));

    // event first, then the push
    let pr = events::pull_request(&contributor(), &repo, &p1, &s.url());
    assert_eq!(s.publish(&pr).await, (true, HELD.to_owned()));
    assert!(!s.served(&pr).await);
    work.ok(&["push", &s.url(), &format!("{p1}:refs/nostr/{}", pr.id.to_hex())]);
    assert!(s.served(&pr).await, "PR served once its commit is here");

    // push first, then the event: the ref is hidden until the event arrives
    let later = events::pull_request(&contributor(), &repo, &p2, &s.url());
    work.ok(&["push", &s.url(), &format!("{p2}:refs/nostr/{}", later.id.to_hex())]);
    assert_eq!(waiting_on_disk(&later.id), p2, "waits outside the served refs");
    assert_eq!(ref_on_disk(&later.id), "");
    let advertised = work.ok(&["ls-remote", &s.url()]);
    assert!(!advertised.contains(&later.id.to_hex()), "unmatched PR ref must be hidden:\n{advertised}");
    assert_eq!(s.server.purgatory_list()[0]["kind"], "placeholder");
    assert_eq!(s.publish(&later).await, (true, String::new()), "released at once");
    assert!(s.served(&later).await);
    assert!(work.ok(&["ls-remote", &s.url()]).contains(&later.id.to_hex()), "visible once matched");
    assert_eq!((ref_on_disk(&later.id), waiting_on_disk(&later.id)), (p2.clone(), String::new()));
    assert!(s.server.purgatory_list().is_empty());

    // mismatch, push first: the ref is deleted and the event waits
    let wrong_first = events::pull_request(&contributor(), &repo, &p1, &s.url());
    work.ok(&["push", &s.url(), &format!("{p2}:refs/nostr/{}", wrong_first.id.to_hex())]);
    assert_eq!(waiting_on_disk(&wrong_first.id), p2);
    assert_eq!(s.publish(&wrong_first).await, (true, HELD.to_owned()));
    assert_eq!(waiting_on_disk(&wrong_first.id), "", "mismatching ref deleted");
    assert_eq!(ref_on_disk(&wrong_first.id), "");
    assert!(!s.served(&wrong_first).await);

    // mismatch, event first: the push is refused
    let wrong_second = events::pull_request(&contributor(), &repo, &p1, &s.url());
    assert_eq!(s.publish(&wrong_second).await, (true, HELD.to_owned()));
    let out = work.fails(&["push", &s.url(), &format!("{p2}:refs/nostr/{}", wrong_second.id.to_hex())]);
    assert!(out.contains("'c' tag"), "{out}");
    assert_eq!(ref_on_disk(&wrong_second.id), "");
    assert!(!s.served(&wrong_second).await);
}

async fn two_pending_states_pushes_match_the_older_then_the_newer(frontend: Frontend) {
    let mut s = Setup::new(frontend.start()).await;
    let ann = events::announcement(&s.owner, D, &s.server.addr, &[]);
    assert_eq!(s.publish(&ann).await, (true, HELD.to_owned()));
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    let c2 = work.commit("a", b"2");
    let older = s.state(&[("refs/heads/main", &c1)]);
    let newer = s.state(&[("refs/heads/main", &c2)]);
    assert_eq!(s.publish(&older).await, (true, HELD.to_owned()));
    assert_eq!(s.publish(&newer).await, (true, HELD.to_owned()));

    work.ok(&["push", &s.url(), &format!("{c1}:refs/heads/main")]);
    assert!(s.served(&older).await && !s.served(&newer).await);
    assert!(s.served(&ann).await);
    work.ok(&["push", &s.url(), &format!("{c2}:refs/heads/main")]);
    assert!(s.served(&newer).await);
    let head = git(&s.server.repo_path(&s.owner.public_key(), D), &["rev-parse", "main"]);
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), c2);
}

async fn held_events_expire_repos_are_removed_and_unmatched_refs_deleted(frontend: Frontend) {
    let server = frontend.builder().arg("--purgatory-expiry-secs=2").arg("--pr-ref-expiry-secs=2").start();
    let mut s = Setup::new(server).await;
    // a hosted repository for the unmatched pull request ref
    let client = s.server.client().await;
    let hosted_owner = Keys::generate();
    host_repository(&s.server, &client, &hosted_owner, "hosted", &[]).await;
    let hosted_url = s.server.clone_url(&hosted_owner.public_key(), "hosted");
    let hosted_path = s.server.repo_path(&hosted_owner.public_key(), "hosted");
    let work = Workdir::clone_from(&hosted_url, &[]);
    let p = work.commit("p", b"pr");
    let orphan_id = EventId::from_byte_array([9; 32]).to_hex();
    work.ok(&["push", &hosted_url, &format!("{p}:refs/nostr/{orphan_id}")]);
    assert_eq!(ref_at(&hosted_path, &waiting_ref(&orphan_id)), p, "the unmatched ref waits");

    // a new repository whose data never comes
    let ann = events::announcement(&s.owner, D, &s.server.addr, &[]);
    assert_eq!(s.publish(&ann).await, (true, HELD.to_owned()));
    let c1 = Workdir::new().commit("x", b"never pushed");
    let state = s.state(&[("refs/heads/main", &c1)]);
    assert_eq!(s.publish(&state).await, (true, HELD.to_owned()));
    let repo_dir = s.server.repo_path(&s.owner.public_key(), D);
    assert!(repo_dir.exists());

    wait_until("the expired announcement's repository is removed", Duration::from_secs(20), || {
        let gone = !repo_dir.exists();
        async move { gone.then_some(()) }
    })
    .await;
    wait_until("the unmatched pull request ref is deleted", Duration::from_secs(20), || {
        let gone = ref_at(&hosted_path, &waiting_ref(&orphan_id)).is_empty();
        async move { gone.then_some(()) }
    })
    .await;
    wait_until("everything held has expired", Duration::from_secs(20), || {
        let empty = s.server.purgatory_list().is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    assert!(!s.served(&ann).await && !s.served(&state).await, "expired events are never served");
    let metrics = s.server.metrics().await;
    for line in [
        "grasp_purgatory_expired_total{type=\"announcement\"} 1",
        "grasp_purgatory_expired_total{type=\"state\"} 1",
        "grasp_purgatory_placeholders_expired_total 1",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
}

async fn a_deletion_stops_a_held_state_from_authorizing(frontend: Frontend) {
    let mut s = Setup::new(frontend.start()).await;
    let client = s.server.client().await;
    host_repository(&s.server, &client, &s.owner, D, &[]).await;
    let work = Workdir::clone_from(&s.url(), &[]);
    let c2 = work.commit("b", b"2");
    let state = s.state(&[("refs/heads/main", &c2)]);
    assert_eq!(s.publish(&state).await, (true, HELD.to_owned()));
    let deletion = events::deletion(&s.owner, &[state.id], &[]);
    assert_eq!(s.publish(&deletion).await, (true, String::new()));
    let out = work.fails(&["push", &s.url(), "main"]);
    assert!(out.contains("rejected by GRASP"), "{out}");
    assert!(!s.served(&state).await);
    assert!(s.server.purgatory_list().is_empty());

    // someone else cannot delete a held event
    let other = s.state(&[("refs/heads/main", &c2)]);
    assert_eq!(s.publish(&other).await, (true, HELD.to_owned()));
    let foreign = events::deletion(&Keys::generate(), &[other.id], &[]);
    assert!(!s.publish(&foreign).await.0);
    work.ok(&["push", &s.url(), "main"]);
    assert!(s.served(&other).await);
}

async fn held_events_survive_sigkill_with_their_deadlines_and_still_authorize(frontend: Frontend) {
    let mut s = Setup::new(frontend.start()).await;
    let ann = events::announcement(&s.owner, D, &s.server.addr, &[]);
    assert_eq!(s.publish(&ann).await, (true, HELD.to_owned()));
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    let state = s.state(&[("refs/heads/main", &c1)]);
    assert_eq!(s.publish(&state).await, (true, HELD.to_owned()));
    let before = s.server.purgatory_list();
    assert_eq!(before.len(), 2);

    s.server.restart(); // SIGKILL, then start on the same data directory
    s.raw = RawClient::connect(&s.server.ws_url()).await;
    let after = s.server.purgatory_list();
    let deadlines = |list: &[serde_json::Value]| {
        let mut d: Vec<(String, u64)> = list
            .iter()
            .map(|e| (e["event_id"].as_str().unwrap().to_owned(), e["expires_at"].as_u64().unwrap()))
            .collect();
        d.sort();
        d
    };
    assert_eq!(deadlines(&before), deadlines(&after), "same entries, same wall-clock deadlines");
    assert!(!s.served(&state).await);

    work.ok(&["push", &s.url(), "main"]);
    assert!(s.served(&state).await && s.served(&ann).await);
    let _ = coordinate(&s.owner.public_key(), D);
}

frontend_tests!(
    state_and_announcement_are_held_until_the_push_then_served_and_delivered_live,
    state_whose_objects_are_here_is_served_at_once,
    pull_requests_in_both_orders_and_mismatching_commits,
    two_pending_states_pushes_match_the_older_then_the_newer,
    held_events_expire_repos_are_removed_and_unmatched_refs_deleted,
    a_deletion_stops_a_held_state_from_authorizing,
    held_events_survive_sigkill_with_their_deadlines_and_still_authorize,
);

/// When the event store refuses a release (here: its map is full), the held events whose
/// data arrived stay held past their deadline and are released once the store takes them.
#[tokio::test]
async fn a_release_the_store_refuses_keeps_the_event_held_until_it_can_be_stored() {
    let mut server = TestServer::builder()
        .env("GRASP_LMDB_MAP_SIZE", (2 * 1024 * 1024).to_string())
        .arg("--purgatory-expiry-secs=2")
        .start();
    let mut raw = RawClient::connect(&server.ws_url()).await;
    // Fill the store with user grasp lists (kind 10317, accepted from anyone), smaller and
    // smaller, until not even a small one fits.
    for size in [100_000, 10_000, 1_000, 100, 0] {
        let mut full = false;
        for _ in 0..2_000 {
            let list = EventBuilder::new(Kind::Custom(10317), "x".repeat(size))
                .tags([Tag::parse(["g", "ws://127.0.0.1:1"]).unwrap()])
                .sign_with_keys(&Keys::generate())
                .unwrap();
            let (ok, message) = raw.publish(&events::json(&list)).await;
            if !ok {
                assert!(message.starts_with("error:"), "{message}");
                full = true;
                break;
            }
        }
        assert!(full, "the small store filled up with {size}-byte events");
    }
    let owner = Keys::generate();
    let announcement = events::announcement(&owner, "kept", &server.addr, &[]);
    assert!(raw.publish(&events::json(&announcement)).await.0);
    let work = Workdir::new();
    let commit = work.commit("README", b"kept");
    let state = events::state(&owner, "kept", &[("refs/heads/main", &commit)], Some("main"));
    assert!(raw.publish(&events::json(&state)).await.0);
    work.ok(&["push", &server.clone_url(&owner.public_key(), "kept"), "main"]);
    // Past the 2 s deadline, twice over: still held, not dropped.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held: Vec<String> =
        server.purgatory_list().iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect();
    assert!(
        held.contains(&state.id.to_hex()),
        "the state whose data is here stays held: {held:?}\n{}",
        server.log()
    );
    // Room again: the held events are released.
    server.restart_with_env(&[("GRASP_LMDB_MAP_SIZE", (64 * 1024 * 1024).to_string().as_str())]);
    let url = server.ws_url();
    wait_until("the state is served", Duration::from_secs(30), || {
        let (id, url) = (state.id.to_hex(), url.clone());
        async move {
            let mut raw = RawClient::connect(&url).await;
            (!raw.req("s", &[json!({"ids": [id]})]).await.ok()?.is_empty()).then_some(())
        }
    })
    .await;
}
