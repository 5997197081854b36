//! Maintainer model v3 through real clients: an invitee has no authority until their own
//! announcement lists a maintainer back, then their state applies without another push;
//! moderators and broken lead paths authorize nothing; the legacy switch restores the old
//! rule; same-second states resolve to the lower id whatever the arrival order; held states
//! a newer one of the same author superseded leave purgatory.

use std::time::Duration;

use grasp_tests::events::{self, announcement_roles, state_at};
use grasp_tests::git::{bare_refs, git_ok, Workdir};
use grasp_tests::{fetch, frontend_tests, publish, wait_until, Frontend, TestServer};
use nostr_sdk::prelude::*;

const D: &str = "repo";

fn now_plus(seconds: u64) -> Timestamp {
    Timestamp::from(Timestamp::now().as_secs() + seconds)
}

fn main_of(server: &TestServer, owner: &Keys) -> Option<String> {
    let (refs, _) = bare_refs(&server.repo_path(&owner.public_key(), D));
    refs.into_iter().find(|(name, _)| name == "refs/heads/main").map(|(_, oid)| oid)
}

fn push_refused(work: &Workdir, url: &str) -> String {
    let out = work.fails(&["push", url, "main"]);
    assert!(out.contains("rejected by GRASP"), "git push did not show our reason:\n{out}");
    out
}

async fn an_invitee_has_no_authority_until_accepting_then_their_state_applies(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let (alice_url, bob_url) =
        (server.clone_url(&alice.public_key(), D), server.clone_url(&bob.public_key(), D));
    let addr = Some(server.addr.as_str());
    // Alice's repository, Bob invited (role tags and the stale `maintainers` ngit 3 writes).
    let invitation = announcement_roles(
        &alice,
        D,
        addr,
        &[("M", alice.public_key()), ("m", bob.public_key())],
        now_plus(0),
    );
    publish(&client, &invitation).await.expect("announcement");
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    publish(&client, &state_at(&alice, D, &[("refs/heads/main", &c1)], Some("main"), now_plus(0)))
        .await
        .unwrap();
    work.ok(&["push", &alice_url, "main"]);

    // Not accepted yet: Bob's state and his push to Alice's repository are refused.
    let c2 = work.commit("a", b"2");
    let bobs_state = state_at(&bob, D, &[("refs/heads/main", &c2)], Some("main"), now_plus(1));
    let refused = publish(&client, &bobs_state).await.expect_err("an invitee's state is refused");
    assert!(refused.starts_with("invalid:") && refused.contains("you are invited"), "{refused}");
    push_refused(&work, &alice_url);

    // Bob hosts his own copy first (rooted at himself): his state counts there only.
    publish(&client, &announcement_roles(&bob, D, addr, &[("M", bob.public_key())], now_plus(0)))
        .await
        .unwrap();
    publish(&client, &bobs_state).await.expect("accepted for Bob's own coordinate");
    work.ok(&["push", &bob_url, "main"]);
    push_refused(&work, &alice_url);
    assert_eq!(main_of(&server, &alice), Some(c1.clone()));

    // Bob accepts: Alice is the lead, he a co-maintainer. His earlier state now governs
    // Alice's repository too, without another push (the objects come from his copy).
    let acceptance =
        announcement_roles(&bob, D, addr, &[("M", alice.public_key()), ("m", bob.public_key())], now_plus(2));
    publish(&client, &acceptance).await.expect("acceptance");
    wait_until("Alice's repository follows Bob's state", Duration::from_secs(30), || {
        std::future::ready((main_of(&server, &alice) == Some(c2.clone())).then_some(()))
    })
    .await;
    let page = reqwest::get(&alice_url).await.unwrap().text().await.unwrap();
    assert!(!page.contains("(invited"), "Bob is no longer listed as invited: {page}");
}

async fn a_moderators_state_and_push_are_refused(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let (alice, carol) = (Keys::generate(), Keys::generate());
    let addr = Some(server.addr.as_str());
    let roles = [("M", alice.public_key()), ("o", carol.public_key())];
    publish(&client, &announcement_roles(&alice, D, addr, &roles, now_plus(0))).await.unwrap();
    // Carol acknowledges as moderator (no repository of her own).
    publish(&client, &announcement_roles(&carol, D, None, &roles, now_plus(0))).await.expect("companion");
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    let refused = publish(&client, &state_at(&carol, D, &[("refs/heads/main", &c1)], None, now_plus(0)))
        .await
        .expect_err("a moderator has no state authority");
    assert!(refused.contains("not a confirmed maintainer"), "{refused}");
    push_refused(&work, &server.clone_url(&alice.public_key(), D));
}

async fn a_lead_cycle_authorizes_nothing(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let addr = Some(server.addr.as_str());
    // Each names the other as lead: no self-`M` ends the path.
    let a = announcement_roles(
        &alice,
        D,
        addr,
        &[("M", bob.public_key()), ("m", alice.public_key())],
        now_plus(0),
    );
    let b =
        announcement_roles(&bob, D, addr, &[("M", alice.public_key()), ("m", bob.public_key())], now_plus(0));
    publish(&client, &a).await.unwrap();
    publish(&client, &b).await.unwrap();
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    for author in [&alice, &bob] {
        let state = state_at(author, D, &[("refs/heads/main", &c1)], Some("main"), now_plus(0));
        let refused = publish(&client, &state).await.expect_err("no authority anywhere");
        assert!(refused.contains("not a confirmed maintainer"), "{refused}");
    }
    push_refused(&work, &server.clone_url(&alice.public_key(), D));
    let page = reqwest::get(&server.clone_url(&alice.public_key(), D)).await.unwrap().text().await.unwrap();
    assert!(page.contains("form a cycle"), "the page says why nobody has authority: {page}");
}

async fn the_legacy_switch_restores_the_listed_rule(frontend: Frontend) {
    let server = frontend.builder().arg("--legacy-maintainers").start();
    let client = server.client().await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let invitation = events::announcement(&alice, D, &server.addr, &[bob.public_key()]);
    publish(&client, &invitation).await.unwrap();
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    // Listed is enough: Bob never announced anything.
    publish(&client, &state_at(&bob, D, &[("refs/heads/main", &c1)], Some("main"), now_plus(0)))
        .await
        .expect("the old rule accepts a listed maintainer");
    work.ok(&["push", &server.clone_url(&alice.public_key(), D), "main"]);
    assert_eq!(main_of(&server, &alice), Some(c1));
}

/// Two states of one author signed in the same second with the same refs, as (lower id,
/// higher id).
fn same_second_states(author: &Keys, commit: &str) -> (Event, Event) {
    let at = now_plus(1);
    let mut states: Vec<Event> = ["one", "two"]
        .into_iter()
        .map(|variant| {
            EventBuilder::new(Kind::Custom(30618), "")
                .tags([
                    Tag::identifier(D),
                    Tag::parse(["refs/heads/main", commit]).unwrap(),
                    Tag::parse(["HEAD", "ref: refs/heads/main"]).unwrap(),
                    Tag::parse(["variant", variant]).unwrap(),
                ])
                .custom_created_at(at)
                .sign_with_keys(author)
                .unwrap()
        })
        .collect();
    states.sort_by_key(|e| e.id);
    let higher = states.pop().unwrap();
    (states.pop().unwrap(), higher)
}

async fn stored_state_id(client: &Client, author: &Keys) -> Option<EventId> {
    let filter = Filter::new().kind(Kind::Custom(30618)).author(author.public_key()).identifier(D);
    let found = fetch(client, filter).await;
    assert!(found.len() <= 1, "one version at the address: {found:?}");
    found.first().map(|e| e.id)
}

async fn same_second_states_resolve_to_the_lower_id_whatever_the_order(frontend: Frontend) {
    for lower_first in [true, false] {
        let server = frontend.start();
        let client = server.client().await;
        let owner = Keys::generate();
        publish(&client, &events::announcement(&owner, D, &server.addr, &[])).await.unwrap();
        let work = Workdir::new();
        let c1 = work.commit("a", b"1");
        let (lower, higher) = same_second_states(&owner, &c1);
        let (first, second) = if lower_first { (&lower, &higher) } else { (&higher, &lower) };
        // Purgatory: both held until the push; the push matches both and picks the lower id.
        publish(&client, first).await.expect("held");
        publish(&client, second).await.expect("held");
        work.ok(&["push", &server.clone_url(&owner.public_key(), D), "main"]);
        let path = server.repo_path(&owner.public_key(), D);
        let applied = git_ok(&path, &["config", "--get", "grasp.appliedState"]);
        assert!(applied.starts_with(&lower.id.to_hex()), "lower first: {lower_first}; applied {applied}");
        // The store keeps the lower id.
        wait_until("the lower id is the stored state", Duration::from_secs(10), || {
            let (client, owner) = (client.clone(), owner.clone());
            async move { (stored_state_id(&client, &owner).await == Some(lower.id)).then_some(()) }
        })
        .await;
        // And a copy of the loser arriving later changes nothing.
        let again = publish(&client, &higher).await;
        assert!(again.is_err() || stored_state_id(&client, &owner).await == Some(lower.id), "{again:?}");
        assert_eq!(stored_state_id(&client, &owner).await, Some(lower.id), "lower first: {lower_first}");
    }
}

async fn held_states_a_newer_one_of_the_same_author_superseded_leave_purgatory(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let (owner, maintainer) = (Keys::generate(), Keys::generate());
    publish(&client, &events::announcement(&owner, D, &server.addr, &[maintainer.public_key()]))
        .await
        .unwrap();
    publish(&client, &events::announcement_with(&maintainer, D, &[], &[], &[owner.public_key()]))
        .await
        .unwrap();
    let never = "ab".repeat(20);
    // Two states whose data never comes: the owner's and the co-maintainer's.
    let owners_stale = state_at(&owner, D, &[("refs/heads/main", &never)], Some("main"), now_plus(0));
    let maintainers = state_at(&maintainer, D, &[("refs/heads/main", &"cd".repeat(20))], None, now_plus(0));
    publish(&client, &owners_stale).await.expect("held");
    publish(&client, &maintainers).await.expect("held");
    // The owner's newer state and its data arrive.
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    publish(&client, &state_at(&owner, D, &[("refs/heads/main", &c1)], Some("main"), now_plus(1)))
        .await
        .unwrap();
    work.ok(&["push", &server.clone_url(&owner.public_key(), D), "main"]);
    let held: Vec<String> =
        server.purgatory_list().iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect();
    assert!(!held.contains(&owners_stale.id.to_hex()), "the superseded state left purgatory: {held:?}");
    assert!(held.contains(&maintainers.id.to_hex()), "another maintainer's state stays: {held:?}");
}

frontend_tests!(
    an_invitee_has_no_authority_until_accepting_then_their_state_applies,
    a_moderators_state_and_push_are_refused,
    a_lead_cycle_authorizes_nothing,
    the_legacy_switch_restores_the_listed_rule,
    same_second_states_resolve_to_the_lower_id_whatever_the_order,
    held_states_a_newer_one_of_the_same_author_superseded_leave_purgatory,
);
