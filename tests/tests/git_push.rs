//! Pushing with the real git CLI: accepted exactly when a maintainer's state event matches,
//! refused with a reason `git push` prints otherwise.

use grasp_tests::events::{self, coordinate};
use grasp_tests::git::{bare_refs, Workdir};
use grasp_tests::{frontend_tests, publish, Frontend, TestServer};
use nostr_sdk::prelude::*;

const D: &str = "repo";

struct Hosted {
    server: TestServer,
    client: Client,
    owner: Keys,
    /// created_at of the last state published, so each new state is strictly newer even
    /// when a test publishes several within one second.
    last_state: std::sync::atomic::AtomicU64,
}

impl Hosted {
    async fn new(frontend: Frontend, maintainers: &[PublicKey]) -> Self {
        let server = frontend.start();
        let client = server.client().await;
        let owner = Keys::generate();
        publish(&client, &events::announcement(&owner, D, &server.addr, maintainers))
            .await
            .expect("announcement");
        Self { server, client, owner, last_state: Default::default() }
    }

    fn url(&self) -> String {
        self.server.clone_url(&self.owner.public_key(), D)
    }

    async fn state(&self, author: &Keys, refs: &[(&str, &str)], head: Option<&str>) -> Event {
        use std::sync::atomic::Ordering;
        let at = Timestamp::now().as_secs().max(self.last_state.load(Ordering::SeqCst) + 1);
        self.last_state.store(at, Ordering::SeqCst);
        let ev = events::state_at(author, D, refs, head, Timestamp::from(at));
        publish(&self.client, &ev).await.expect("state accepted");
        ev
    }

    fn disk(&self) -> (Vec<(String, String)>, String) {
        bare_refs(&self.server.repo_path(&self.owner.public_key(), D))
    }
}

fn assert_rejected(output: &str, needle: &str) {
    assert!(output.contains("rejected by GRASP"), "git push did not show our reason:\n{output}");
    assert!(output.contains(needle), "expected '{needle}' in:\n{output}");
}

async fn owner_state_authorizes_push_and_clone_matches(frontend: Frontend) {
    let h = Hosted::new(frontend, &[]).await;
    let work = Workdir::new();
    let c1 = work.commit("README", b"hello");

    let out = work.fails(&["push", &h.url(), "main"]);
    println!("git push output:\n{out}");
    assert_rejected(&out, "no state event");

    h.state(&h.owner, &[("refs/heads/main", &c1)], Some("main")).await;
    work.ok(&["push", &h.url(), "main"]);
    let (refs, head) = h.disk();
    assert_eq!(refs, vec![("refs/heads/main".to_owned(), c1.clone())]);
    assert_eq!(head, "refs/heads/main");

    let clone = Workdir::clone_from(&h.url(), &[]);
    assert_eq!(clone.rev("HEAD"), c1);
    assert_eq!(std::fs::read(clone.path().join("README")).unwrap(), b"hello");
}

async fn pushes_that_do_not_match_are_rejected_with_the_reason(frontend: Frontend) {
    let h = Hosted::new(frontend, &[]).await;
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    let c2 = work.commit("a", b"2");

    // wrong commit
    h.state(&h.owner, &[("refs/heads/main", &c1)], Some("main")).await;
    let out = work.fails(&["push", &h.url(), "main"]);
    assert_rejected(&out, "refs/heads/main would be at");
    assert!(out.contains(&c2[..7]) && out.contains(&c1[..7]), "{out}");

    // an extra branch that the state does not list
    let out =
        work.fails(&["push", &h.url(), &format!("{c1}:refs/heads/main"), &format!("{c1}:refs/heads/extra")]);
    assert_rejected(&out, "refs/heads/extra is not in the state");

    // a state from someone who is not a maintainer does not count
    let stranger = Keys::generate();
    let stranger_state = events::state(&stranger, D, &[("refs/heads/main", &c2)], Some("main"));
    assert!(publish(&h.client, &stranger_state).await.is_err(), "the relay refuses it too");
    let out = work.fails(&["push", &h.url(), "main"]);
    assert_rejected(&out, "would be at");

    // nothing landed
    assert!(h.disk().0.is_empty());
    work.ok(&["push", &h.url(), &format!("{c1}:refs/heads/main")]);
    assert_eq!(h.disk().0, vec![("refs/heads/main".to_owned(), c1)]);
}

async fn non_maintainer_state_cannot_authorize_even_when_stored_for_another_owner(frontend: Frontend) {
    // Bob hosts his own repo with the same identifier; his state is stored, but he is not
    // in Alice's maintainer set, so it cannot authorize a push to Alice's repo.
    let h = Hosted::new(frontend, &[]).await;
    let bob = Keys::generate();
    publish(&h.client, &events::announcement(&bob, D, &h.server.addr, &[])).await.unwrap();
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    h.state(&bob, &[("refs/heads/main", &c1)], Some("main")).await;
    let out = work.fails(&["push", &h.url(), "main"]);
    assert_rejected(&out, "no state event");
    // but it authorizes Bob's own repo
    work.ok(&["push", &h.server.clone_url(&bob.public_key(), D), "main"]);
}

async fn confirmed_and_recursively_confirmed_maintainers_states_authorize(frontend: Frontend) {
    let (m1, m2) = (Keys::generate(), Keys::generate());
    let h = Hosted::new(frontend, &[m1.public_key()]).await;
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    // m1 accepts the owner's invitation (lists the owner back, on another server) and
    // invites m2, who accepts by listing m1 back.
    let elsewhere = |keys: &Keys, listed: &[PublicKey]| {
        events::announcement_with(
            keys,
            D,
            &["https://elsewhere.example/x.git".into()],
            &["wss://elsewhere.example".into()],
            listed,
        )
    };
    publish(&h.client, &elsewhere(&m1, &[h.owner.public_key(), m2.public_key()])).await.expect("m1 accepts");
    h.state(&m1, &[("refs/heads/main", &c1)], Some("main")).await;
    work.ok(&["push", &h.url(), "main"]);

    publish(&h.client, &elsewhere(&m2, &[m1.public_key()])).await.expect("m2 accepts");
    let c2 = work.commit("a", b"2");
    h.state(&m2, &[("refs/heads/main", &c2)], Some("main")).await;
    work.ok(&["push", &h.url(), "main"]);
    assert_eq!(h.disk().0, vec![("refs/heads/main".to_owned(), c2)]);
}

async fn tags_branch_creation_deletion_and_force_push(frontend: Frontend) {
    let h = Hosted::new(frontend, &[]).await;
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    work.ok(&["tag", "light"]);
    work.ok(&["tag", "-a", "v1", "-m", "release 1"]);
    let annotated = work.rev("refs/tags/v1");
    assert_ne!(annotated, c1, "annotated tag is its own object");
    h.state(
        &h.owner,
        &[
            ("refs/heads/main", &c1),
            ("refs/tags/light", &c1),
            ("refs/tags/v1", &annotated),
            ("refs/tags/v1^{}", &c1),
        ],
        Some("main"),
    )
    .await;
    work.ok(&["push", &h.url(), "main", "--tags"]);

    // create a branch
    work.ok(&["checkout", "-q", "-b", "feature"]);
    let f1 = work.commit("b", b"feature");
    let with_feature = [
        ("refs/heads/main", c1.as_str()),
        ("refs/heads/feature", &f1),
        ("refs/tags/light", &c1),
        ("refs/tags/v1", &annotated),
    ];
    h.state(&h.owner, &with_feature, Some("main")).await;
    work.ok(&["push", &h.url(), "feature"]);

    // delete it again
    let without = [("refs/heads/main", c1.as_str()), ("refs/tags/light", &c1), ("refs/tags/v1", &annotated)];
    h.state(&h.owner, &without, Some("main")).await;
    // The state was already applied on arrival (its objects are here): the branch is gone
    // and a push deleting it is a no-op that still succeeds.
    let (refs, _) = h.disk();
    assert!(!refs.iter().any(|(n, _)| n == "refs/heads/feature"), "{refs:?}");

    // force push: rewrite main's history
    work.ok(&["checkout", "-q", "main"]);
    work.ok(&["commit", "-q", "--amend", "-m", "amended"]);
    let amended = work.rev("HEAD");
    let amended_state =
        [("refs/heads/main", amended.as_str()), ("refs/tags/light", &c1), ("refs/tags/v1", &annotated)];
    h.state(&h.owner, &amended_state, Some("main")).await;
    let out = work.fails(&["push", &h.url(), "main"]);
    assert!(
        out.contains("non-fast-forward") || out.contains("fetch first"),
        "git refuses without --force:\n{out}"
    );
    work.ok(&["push", "--force", &h.url(), "main"]);
    let (refs, _) = h.disk();
    assert!(refs.contains(&("refs/heads/main".to_owned(), amended)), "{refs:?}");
}

async fn branch_deletion_by_push_is_authorized_by_a_matching_state(frontend: Frontend) {
    let h = Hosted::new(frontend, &[]).await;
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    h.state(&h.owner, &[("refs/heads/main", &c1), ("refs/heads/old", &c1)], Some("main")).await;
    work.ok(&["push", &h.url(), "main", &format!("{c1}:refs/heads/old")]);

    // Deleting a branch the newest state still lists is refused.
    let out = work.fails(&["push", &h.url(), ":refs/heads/old"]);
    assert_rejected(&out, "refs/heads/old is in the state");

    // A state without 'old' whose new commit is not here yet waits for the push, and the
    // push that moves main and deletes 'old' in one go matches it.
    let c2 = work.commit("a", b"2");
    h.state(&h.owner, &[("refs/heads/main", &c2)], Some("main")).await;
    assert!(h.disk().0.iter().any(|(n, _)| n == "refs/heads/old"), "not applied before the push");
    work.ok(&["push", &h.url(), "main", ":refs/heads/old"]);
    assert_eq!(h.disk().0, vec![("refs/heads/main".to_owned(), c2)]);
}

async fn head_follows_state_and_co_maintainer_repo_gets_refs_and_objects(frontend: Frontend) {
    let bob = Keys::generate();
    let h = Hosted::new(frontend, &[bob.public_key()]).await;
    // Bob hosts the same identifier here and lists Alice (the owner) as maintainer.
    publish(&h.client, &events::announcement(&bob, D, &h.server.addr, &[h.owner.public_key()]))
        .await
        .unwrap();
    let bob_path = h.server.repo_path(&bob.public_key(), D);

    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    work.ok(&["checkout", "-q", "-b", "dev"]);
    let d1 = work.commit("b", b"dev");
    h.state(&h.owner, &[("refs/heads/main", &c1), ("refs/heads/dev", &d1)], Some("dev")).await;
    work.ok(&["push", &h.url(), "main", "dev"]);

    let expected =
        vec![("refs/heads/dev".to_owned(), d1.clone()), ("refs/heads/main".to_owned(), c1.clone())];
    assert_eq!(h.disk(), (expected.clone(), "refs/heads/dev".to_owned()));
    assert_eq!(bare_refs(&bob_path), (expected, "refs/heads/dev".to_owned()));
    let clone = Workdir::clone_from(&h.server.clone_url(&bob.public_key(), D), &[]);
    assert_eq!(clone.rev("HEAD"), d1);
    assert_eq!(clone.rev("origin/main"), c1);
}

async fn state_whose_objects_exist_is_applied_when_it_arrives(frontend: Frontend) {
    let h = Hosted::new(frontend, &[]).await;
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    h.state(&h.owner, &[("refs/heads/main", &c1)], Some("main")).await;
    work.ok(&["push", &h.url(), "main"]);
    h.state(&h.owner, &[("refs/heads/main", &c1), ("refs/heads/release", &c1)], Some("release")).await;
    let (refs, head) = h.disk();
    assert!(refs.contains(&("refs/heads/release".to_owned(), c1.clone())), "{refs:?}");
    assert_eq!(head, "refs/heads/release");
}

async fn pull_request_refs(frontend: Frontend) {
    let h = Hosted::new(frontend, &[]).await;
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    h.state(&h.owner, &[("refs/heads/main", &c1)], Some("main")).await;
    work.ok(&["push", &h.url(), "main"]);
    let contributor = Keys::generate();
    work.ok(&["checkout", "-q", "-b", "pr"]);
    let p1 = work.commit("pr", b"change");

    // unknown PR id: accepted (the event may follow)
    let unknown = EventId::from_byte_array([7; 32]).to_hex();
    work.ok(&["push", &h.url(), &format!("{p1}:refs/nostr/{unknown}")]);

    // known PR: the commit must match its 'c' tag
    let pr = events::pull_request(&contributor, &coordinate(&h.owner.public_key(), D), &p1, &h.url());
    publish(&h.client, &pr).await.expect("PR accepted");
    let out = work.fails(&["push", &h.url(), &format!("{c1}:refs/nostr/{}", pr.id.to_hex())]);
    assert_rejected(&out, "'c' tag");
    work.ok(&["push", &h.url(), &format!("{p1}:refs/nostr/{}", pr.id.to_hex())]);

    // malformed ids
    for bad in
        ["refs/nostr/abc", "refs/nostr/ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"]
    {
        let out = work.fails(&["push", &h.url(), &format!("{p1}:{bad}")]);
        assert_rejected(&out, "64-character");
    }
    // other namespaces
    let out = work.fails(&["push", &h.url(), &format!("{p1}:refs/notes/x")]);
    assert_rejected(&out, "only refs/heads");
    let (refs, _) = h.disk();
    let nostr_refs: Vec<_> = refs.iter().filter(|(n, _)| n.starts_with("refs/nostr/")).collect();
    assert_eq!(
        nostr_refs,
        [&(format!("refs/nostr/{}", pr.id.to_hex()), p1.clone())],
        "the matched PR is served"
    );
    let waiting: Vec<_> = refs.iter().filter(|(n, _)| n.starts_with("refs/grasp/waiting/")).collect();
    assert_eq!(waiting, [&(format!("refs/grasp/waiting/{unknown}"), p1.clone())], "the unknown one waits");
}

async fn a_tag_the_state_does_not_declare_is_refused(frontend: Frontend) {
    let h = Hosted::new(frontend, &[]).await;
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    work.ok(&["tag", "v9"]);
    h.state(&h.owner, &[("refs/heads/main", &c1)], Some("main")).await;
    let out = work.fails(&["push", &h.url(), "main", "v9"]);
    assert_rejected(&out, "refs/tags/v9 is not in the state");
    assert!(h.disk().0.is_empty(), "nothing of the refused push landed");
    work.ok(&["push", &h.url(), "main"]);
    assert_eq!(h.disk().0, vec![("refs/heads/main".to_owned(), c1)]);
}

frontend_tests!(
    a_tag_the_state_does_not_declare_is_refused,
    owner_state_authorizes_push_and_clone_matches,
    pushes_that_do_not_match_are_rejected_with_the_reason,
    non_maintainer_state_cannot_authorize_even_when_stored_for_another_owner,
    confirmed_and_recursively_confirmed_maintainers_states_authorize,
    tags_branch_creation_deletion_and_force_push,
    branch_deletion_by_push_is_authorized_by_a_matching_state,
    head_follows_state_and_co_maintainer_repo_gets_refs_and_objects,
    state_whose_objects_exist_is_applied_when_it_arrives,
    pull_request_refs,
);
