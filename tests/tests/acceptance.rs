//! GRASP-01 event acceptance, black-box: which events the relay stores and which it refuses.

use grasp_tests::events::{self, coordinate};
use grasp_tests::{host_repository, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::json;

const D: &str = "repo";

const HELD: &str = "purgatory: won't be served until git data arrives";

struct Fixture {
    server: TestServer,
    raw: RawClient,
    client: Client,
}

impl Fixture {
    async fn new() -> Self {
        let server = TestServer::start();
        let raw = RawClient::connect(&server.ws_url()).await;
        let client = server.client().await;
        Self { server, raw, client }
    }

    async fn publish(&mut self, event: &Event) -> (bool, String) {
        self.raw.publish(&events::json(event)).await
    }

    /// Accepted and served at once.
    async fn accepted(&mut self, event: &Event) {
        let (ok, msg) = self.publish(event).await;
        assert!(ok, "expected kind {} to be accepted, got: {msg}", event.kind);
        assert!(self.is_served(event).await, "accepted event must be served");
    }

    /// Accepted into purgatory: OK true with the purgatory message, not served.
    async fn held(&mut self, event: &Event) {
        let (ok, msg) = self.publish(event).await;
        assert!(ok && msg == HELD, "expected kind {} to be held, got ({ok}, {msg})", event.kind);
        assert!(!self.is_served(event).await, "held event must not be served");
    }

    async fn rejected(&mut self, event: &Event, prefix: &str) -> String {
        let (ok, msg) = self.publish(event).await;
        assert!(!ok, "expected kind {} to be rejected, but it was accepted ({msg})", event.kind);
        assert!(msg.starts_with(prefix), "expected '{prefix}' prefix: {msg}");
        assert!(!self.is_served(event).await, "rejected event must not be served");
        msg
    }

    async fn is_served(&mut self, event: &Event) -> bool {
        // A fresh connection: nothing from earlier subscriptions can be in flight.
        let mut probe = RawClient::connect(&self.server.ws_url()).await;
        !probe.req("check", &[json!({"ids": [event.id.to_hex()]})]).await.unwrap().is_empty()
    }

    /// Hosts a repository owned by a fresh key (announcement, state and a push, so both
    /// are served); returns the owner and repo coordinate.
    async fn hosted(&mut self, maintainers: &[PublicKey]) -> (Keys, String) {
        let owner = Keys::generate();
        let coordinate = host_repository(&self.server, &self.client, &owner, D, maintainers).await;
        (owner, coordinate)
    }

    fn npub_url(&self, keys: &Keys, scheme: &str, authority: &str) -> String {
        format!("{scheme}://{authority}/{}/{D}.git", keys.public_key().to_bech32().unwrap())
    }
}

#[tokio::test]
async fn announcement_must_list_this_server_in_clone_and_relays() {
    let mut f = Fixture::new().await;
    let addr = f.server.addr.clone();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let k = Keys::generate();
    let ws = format!("ws://{addr}");

    let clone_only = events::announcement_with(&k, D, &[f.npub_url(&k, "http", &addr)], &[], &[]);
    let msg = f.rejected(&clone_only, "blocked:").await;
    assert!(msg.contains("'relays'"), "{msg}");
    let relays_only = events::announcement_with(&k, D, &[], &[ws.clone()], &[]);
    let msg = f.rejected(&relays_only, "blocked:").await;
    assert!(msg.contains("'clone'"), "{msg}");
    let other_port = format!("127.0.0.1:{}", port.wrapping_add(1));
    let wrong_port =
        events::announcement_with(&k, D, &[f.npub_url(&k, "http", &other_port)], &[ws.clone()], &[]);
    f.rejected(&wrong_port, "blocked:").await;
    let substring = events::announcement_with(
        &k,
        D,
        &[format!("http://evil.example/?u={}", f.npub_url(&k, "http", &addr))],
        &[format!("ws://evil.example/{addr}")],
        &[],
    );
    f.rejected(&substring, "blocked:").await;
    let not_a_repo_path =
        events::announcement_with(&k, D, &[format!("http://{addr}/{D}.git")], &[ws.clone()], &[]);
    f.rejected(&not_a_repo_path, "blocked:").await;

    // https/wss, a trailing slash and other servers in the lists are fine
    let tls = events::announcement_with(
        &k,
        D,
        &["https://elsewhere.example/x.git".into(), format!("{}/", f.npub_url(&k, "https", &addr))],
        &["wss://other.example".into(), format!("wss://{addr}/")],
        &[],
    );
    f.held(&tls).await;
    f.held(&events::announcement(&Keys::generate(), D, &addr, &[])).await;
}

#[tokio::test]
async fn announcement_with_unhostable_identifier_is_invalid() {
    let mut f = Fixture::new().await;
    let k = Keys::generate();
    let addr = f.server.addr.clone();
    let bad = events::announcement_with(
        &k,
        "..",
        &[format!("http://{addr}/{}/x.git", k.public_key().to_bech32().unwrap())],
        &[format!("ws://{addr}")],
        &[],
    );
    f.rejected(&bad, "invalid:").await;
}

#[tokio::test]
async fn maintainer_announcements_are_accepted_without_listing_the_server_recursively() {
    let mut f = Fixture::new().await;
    let (m1, m2, stranger) = (Keys::generate(), Keys::generate(), Keys::generate());
    f.hosted(&[m1.public_key()]).await;
    let elsewhere = |k: &Keys, maintainers: &[PublicKey]| {
        events::announcement_with(
            k,
            D,
            &["https://other.example/x.git".into()],
            &["wss://other.example".into()],
            maintainers,
        )
    };
    // m2 is not yet reachable: m1 has no announcement naming m2
    f.rejected(&elsewhere(&m2, &[]), "blocked:").await;
    f.accepted(&elsewhere(&m1, &[m2.public_key()])).await;
    f.accepted(&elsewhere(&m2, &[])).await;
    f.rejected(&elsewhere(&stranger, &[]), "blocked:").await;
    // same key, other identifier: not a companion
    let other_d = events::announcement_with(&m1, "other", &["https://other.example/x.git".into()], &[], &[]);
    f.rejected(&other_d, "blocked:").await;
}

#[tokio::test]
async fn state_events_need_a_confirmed_maintainer() {
    let mut f = Fixture::new().await;
    let (m1, m2, stranger) = (Keys::generate(), Keys::generate(), Keys::generate());
    let commit = "1".repeat(40);
    let refs = [("refs/heads/main", commit.as_str())];

    // no announcement for this identifier at all
    let orphan_state = events::state(&stranger, "nothing-here", &refs, Some("main"));
    let msg = f.rejected(&orphan_state, "invalid:").await;
    assert!(msg.contains("no announcement"), "{msg}");

    let (owner, _) = f.hosted(&[m1.public_key()]).await;
    // accepted, and held until a push brings commit 1111… (signed after the hosted state)
    let next = Timestamp::from(Timestamp::now().as_secs() + 1);
    f.held(&events::state_at(&owner, D, &refs, Some("main"), next)).await;
    // an invited maintainer without an announcement of their own: not yet
    let msg = f.rejected(&events::state(&m1, D, &refs, Some("main")), "invalid:").await;
    assert!(msg.contains("you are invited"), "{msg}");
    // m1 accepts (lists the owner back) and invites m2
    let m1_ann = events::announcement_with(&m1, D, &[], &[], &[owner.public_key(), m2.public_key()]);
    f.accepted(&m1_ann).await;
    f.held(&events::state(&m1, D, &refs, Some("main"))).await;
    // m2, invited by a confirmed maintainer, is confirmed once they list m1 back
    f.rejected(&events::state(&m2, D, &refs, None), "invalid:").await;
    f.accepted(&events::announcement_with(&m2, D, &[], &[], &[m1.public_key()])).await;
    f.held(&events::state(&m2, D, &refs, None)).await;
    let msg = f.rejected(&events::state(&stranger, D, &refs, None), "invalid:").await;
    assert!(msg.contains("not authorized"), "{msg}");

    // an older state than the stored one from the same author
    let old = events::state_at(&owner, D, &refs, None, Timestamp::from(Timestamp::now().as_secs() - 3600));
    f.rejected(&old, "invalid:").await;
}

#[tokio::test]
async fn events_tagging_a_hosted_repo_by_coordinate_are_accepted() {
    let mut f = Fixture::new().await;
    let (_, repo) = f.hosted(&[]).await;
    let author = Keys::generate();
    f.accepted(&events::tagged(&author, 1621, "a", &repo)).await;
    f.accepted(&events::tagged(&author, 1111, "A", &repo)).await;
    f.accepted(&events::tagged(&author, 1, "q", &repo)).await;
    f.accepted(&events::tagged(&author, 1617, "a", &repo)).await;

    // a coordinate of a repository that is not hosted here
    let unhosted = coordinate(&Keys::generate().public_key(), D);
    let msg = f.rejected(&events::tagged(&author, 1621, "a", &unhosted), "blocked:").await;
    assert!(msg.contains("must reference"), "{msg}");
}

#[tokio::test]
async fn events_tagging_an_accepted_event_by_id_are_accepted() {
    let mut f = Fixture::new().await;
    let (_, repo) = f.hosted(&[]).await;
    let author = Keys::generate();
    let issue = events::issue(&author, &repo);
    f.accepted(&issue).await;
    let id = issue.id.to_hex();
    let reply = events::tagged(&author, 1111, "E", &id);
    f.accepted(&reply).await;
    f.accepted(&events::tagged(&author, 7, "e", &id)).await;
    f.accepted(&events::tagged(&author, 1, "q", &id)).await;
    // transitively: a reaction to the reply
    f.accepted(&events::tagged(&author, 7, "e", &reply.id.to_hex())).await;
    // an id that is not stored here
    f.rejected(&events::tagged(&author, 7, "e", &"ab".repeat(32)), "blocked:").await;
}

#[tokio::test]
async fn events_tagged_by_an_accepted_event_are_accepted() {
    let mut f = Fixture::new().await;
    let (_, repo) = f.hosted(&[]).await;
    let author = Keys::generate();
    // a note that the issue will quote, signed before the issue
    let quoted_note = EventBuilder::text_note("see this").sign_with_keys(&author).unwrap();
    let article = EventBuilder::new(Kind::Custom(30023), "long form")
        .tag(Tag::identifier("design"))
        .sign_with_keys(&author)
        .unwrap();
    let article_coord = format!("30023:{}:design", author.public_key().to_hex());

    f.rejected(&quoted_note, "blocked:").await;
    let issue = EventBuilder::new(Kind::Custom(1621), "see linked")
        .tags([
            Tag::parse(["a", &repo]).unwrap(),
            Tag::parse(["q", &quoted_note.id.to_hex()]).unwrap(),
            Tag::parse(["a", &article_coord]).unwrap(),
        ])
        .sign_with_keys(&author)
        .unwrap();
    f.accepted(&issue).await;
    f.accepted(&quoted_note).await;
    f.accepted(&article).await;
}

#[tokio::test]
async fn orphan_events_are_rejected() {
    let mut f = Fixture::new().await;
    f.hosted(&[]).await;
    let k = Keys::generate();
    f.rejected(&events::orphan(&k), "blocked:").await;
    f.rejected(&events::tagged(&k, 1621, "a", "not-a-coordinate"), "blocked:").await;
    f.rejected(&events::tagged(&k, 1621, "p", &k.public_key().to_hex()), "blocked:").await;
}

#[tokio::test]
async fn user_grasp_lists_are_accepted_from_anyone() {
    let mut f = Fixture::new().await;
    let k = Keys::generate();
    let list = EventBuilder::new(Kind::Custom(10317), "")
        .tag(Tag::parse(["g", &format!("ws://{}", f.server.addr)]).unwrap())
        .sign_with_keys(&k)
        .unwrap();
    f.accepted(&list).await;
}

#[tokio::test]
async fn deletion_requests_only_delete_the_authors_own_events() {
    let mut f = Fixture::new().await;
    let (owner, repo) = f.hosted(&[]).await;
    let (alice, mallory) = (Keys::generate(), Keys::generate());
    let issue = events::issue(&alice, &repo);
    f.accepted(&issue).await;

    let foreign = events::deletion(&mallory, &[issue.id], &[]);
    let msg = f.rejected(&foreign, "invalid:").await;
    assert!(msg.contains("own author"), "{msg}");
    assert!(f.is_served(&issue).await, "someone else's deletion must not delete");
    let foreign_coord = events::deletion(&mallory, &[], &[repo.clone()]);
    f.rejected(&foreign_coord, "invalid:").await;

    let own = events::deletion(&alice, &[issue.id], &[]);
    f.accepted(&own).await;
    assert!(!f.is_served(&issue).await, "deleted event must no longer be served");
    // re-publishing a deleted event does not bring it back
    let (ok, msg) = f.publish(&issue).await;
    assert!(!ok && msg.starts_with("blocked:"), "{msg}");

    // the owner deletes the announcement by coordinate
    let ann = f.raw.req("ann", &[json!({"kinds": [30617]})]).await.unwrap();
    assert_eq!(ann.len(), 1);
    f.accepted(&events::deletion(&owner, &[], &[repo])).await;
    assert!(f.raw.req("ann2", &[json!({"kinds": [30617]})]).await.unwrap().is_empty());

    // a deletion naming nothing stored here
    f.rejected(&events::deletion(&alice, &[EventId::all_zeros()], &[]), "blocked:").await;
}

#[tokio::test]
async fn protected_and_far_future_events_are_refused() {
    let mut f = Fixture::new().await;
    let (_, repo) = f.hosted(&[]).await;
    let k = Keys::generate();
    let protected = EventBuilder::new(Kind::Custom(1621), "x")
        .tags([Tag::parse(["a", &repo]).unwrap(), Tag::parse(["-"]).unwrap()])
        .sign_with_keys(&k)
        .unwrap();
    f.rejected(&protected, "restricted:").await;
    let future = EventBuilder::new(Kind::Custom(1621), "x")
        .tag(Tag::parse(["a", &repo]).unwrap())
        .custom_created_at(Timestamp::from(Timestamp::now().as_secs() + 7200))
        .sign_with_keys(&k)
        .unwrap();
    f.rejected(&future, "invalid:").await;
}

#[tokio::test]
async fn events_about_a_held_repository_wait_with_it() {
    let mut f = Fixture::new().await;
    let (owner, m1, author) = (Keys::generate(), Keys::generate(), Keys::generate());
    let ann = events::announcement(&owner, D, &f.server.addr, &[m1.public_key()]);
    f.held(&ann).await;
    let repo = coordinate(&owner.public_key(), D);
    let issue = events::issue(&author, &repo);
    f.held(&issue).await;
    let companion = events::announcement_with(&m1, D, &["https://elsewhere.example/x.git".into()], &[], &[]);
    f.held(&companion).await;
    let reply = events::tagged(&author, 1111, "E", &issue.id.to_hex());
    f.held(&reply).await;

    // the push that brings the git data releases the announcement and what waited for it
    let work = grasp_tests::git::Workdir::new();
    let commit = work.commit("a", b"1");
    f.held(&events::state(&owner, D, &[("refs/heads/main", &commit)], Some("main"))).await;
    work.ok(&["push", &f.server.clone_url(&owner.public_key(), D), "main"]);
    for event in [&ann, &issue, &companion, &reply] {
        assert!(f.is_served(event).await, "kind {} released with its repository", event.kind);
    }
}
