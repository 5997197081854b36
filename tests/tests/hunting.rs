//! Git-data hunting, black-box: events held on server A whose git data sits on other
//! servers (GRASP servers, or plain `git http-backend`) are released on A without any push
//! to A, throttled and backing off, with nothing landing from a fetch that was cut off.

use std::time::Duration;

use grasp_tests::events;
use grasp_tests::git::{bare_refs, git, git_ok, Workdir};
use grasp_tests::metrics::Exposition;
use grasp_tests::remotes::{incompressible, refused_url, GitHttpBackend, SilentRemote};
use grasp_tests::served::{is_served as served, publish_to as publish, wait_served};
use grasp_tests::{wait_until, TestServer};
use nostr_sdk::prelude::*;
use serde_json::Value;

const D: &str = "repo";
const HELD: &str = "purgatory: won't be served until git data arrives";
const LONG: Duration = Duration::from_secs(60);

/// The `purgatory list` entry of a held event.
fn listed(server: &TestServer, event: &Event) -> Option<Value> {
    server.purgatory_list().into_iter().find(|e| e["event_id"] == event.id.to_hex())
}

/// The value of a counter or gauge line (0 when absent).
async fn metric(server: &TestServer, line_prefix: &str) -> u64 {
    let text = server.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix).and_then(|v| v.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}

/// Waits until the metric line starting with `line_prefix` has a value `ok` accepts (a fetch
/// is counted when its task reports back, just after the release it caused).
async fn wait_metric(server: &TestServer, line_prefix: &str, ok: impl Fn(u64) -> bool) {
    let what = format!("metric {line_prefix}");
    wait_until(&what, LONG, || async { ok(metric(server, line_prefix).await).then_some(()) }).await;
}

/// An announcement of `owner` listing every clone URL (and each GRASP server's relay).
fn announce(owner: &Keys, clone: &[String], relays: &[&TestServer]) -> Event {
    let relays: Vec<String> = relays.iter().map(|s| s.ws_url()).collect();
    events::announcement_with(owner, D, clone, &relays, &[])
}

/// A state of `owner` signed `offset` seconds from now (distinct timestamps order states).
fn state(owner: &Keys, refs: &[(&str, &str)], offset: u64) -> Event {
    events::state_at(owner, D, refs, Some("main"), Timestamp::from(Timestamp::now().as_secs() + offset))
}

/// Publishes `ann` and `state` on `server` and pushes `main` of `work` there: the data is
/// served by that server.
async fn host_on(server: &TestServer, owner: &Keys, ann: &Event, state: &Event, work: &Workdir) {
    assert!(publish(server, ann).await.0);
    assert_eq!(publish(server, state).await, (true, HELD.to_owned()));
    work.ok(&["push", &server.clone_url(&owner.public_key(), D), "--all"]);
    wait_served(server, state, "state served where it was pushed").await;
}

/// Waits until the repository of `owner` on `server` has exactly `expected` (the git-data
/// step releases a state first and aligns the repository right after).
async fn wait_refs(server: &TestServer, owner: &Keys, expected: &[(&str, &str)]) {
    let expected: Vec<(String, String)> =
        expected.iter().map(|(n, o)| (n.to_string(), o.to_string())).collect();
    let path = server.repo_path(&owner.public_key(), D);
    let what = format!("refs {expected:?}");
    wait_until(&what, LONG, || async { (bare_refs(&path).0 == expected).then_some(()) }).await;
}

fn object_exists(repo: &std::path::Path, oid: &str) -> bool {
    git(repo, &["cat-file", "-e", oid]).status.success()
}

fn no_push_received(metrics: &str) -> bool {
    let m = Exposition::parse(metrics);
    let pushes: Vec<f64> = m
        .samples_of("ngit_git_operations_total")
        .filter(|s| s.labels["operation"] == "push")
        .map(|s| s.value)
        .collect();
    assert!(!pushes.is_empty(), "push operations are exported (at 0 before the first)");
    pushes.iter().all(|n| *n == 0.0)
}

#[tokio::test]
async fn state_sent_to_a_with_its_data_only_on_b_is_released_on_a_without_a_push() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let owner = Keys::generate();
    let npub_urls = [a.clone_url(&owner.public_key(), D), b.clone_url(&owner.public_key(), D)];
    let ann = announce(&owner, &npub_urls, &[&a, &b]);
    let work = Workdir::new();
    let c1 = work.commit("README", b"hello");
    work.ok(&["branch", "release"]);
    let s = state(&owner, &[("refs/heads/main", &c1), ("refs/heads/release", &c1)], 0);
    host_on(&b, &owner, &ann, &s, &work).await;

    assert_eq!(publish(&a, &ann).await, (true, HELD.to_owned()));
    assert_eq!(publish(&a, &s).await, (true, HELD.to_owned()));
    wait_served(&a, &s, "state released on A by hunting").await;
    wait_served(&a, &ann, "announcement released with it").await;

    wait_refs(&a, &owner, &[("refs/heads/main", &c1), ("refs/heads/release", &c1)]).await;
    assert_eq!(bare_refs(&a.repo_path(&owner.public_key(), D)).1, "refs/heads/main");
    let clone = Workdir::clone_from(&npub_urls[0], &[]);
    assert_eq!(clone.rev("HEAD"), c1, "and serves it");

    // The fetch is counted once its task reports back, just after the release.
    let metrics = wait_until("the fetch is counted", LONG, || async {
        let m = a.metrics().await;
        m.contains("grasp_hunt_fetches_total{result=\"objects\"} 1").then_some(m)
    })
    .await;
    assert!(no_push_received(&metrics), "nothing was pushed to A:\n{metrics}");
    assert!(metrics.contains("grasp_hunt_released_total{type=\"state\"} 1"), "{metrics}");
    assert!(metrics.contains("grasp_hunt_fetches_started_total 1"), "{metrics}");
    assert!(!metrics.contains("127.0.0.1"), "no series names the remote: {metrics}");
    assert_eq!(metric(&a, "grasp_hunt_queue_size ").await, 0);
    assert!(metric(&a, "grasp_hunt_objects_fetched_total ").await >= 3, "commit, tree, blob");
    assert!(a.purgatory_list().is_empty());
}

#[tokio::test]
async fn pull_request_is_released_from_its_clone_tag_on_a_plain_git_server() {
    let a = TestServer::start();
    let plain = GitHttpBackend::start();
    let owner = Keys::generate();
    let client = a.client().await;
    let repo = grasp_tests::host_repository(&a, &client, &owner, D, &[]).await;
    let url = a.clone_url(&owner.public_key(), D);
    let work = Workdir::clone_from(&url, &[]);
    let tip = work.commit("feature", b"a contribution");
    let fork = plain.repo("fork");
    work.ok(&["push", fork.to_str().unwrap(), "HEAD:refs/heads/feature"]);

    let pr = events::pull_request(&Keys::generate(), &repo, &tip, &plain.url("fork"));
    assert_eq!(publish(&a, &pr).await, (true, HELD.to_owned()));
    wait_served(&a, &pr, "pull request released on A by hunting").await;

    let nostr_ref = format!("refs/nostr/{}", pr.id.to_hex());
    let listed = work.ok(&["ls-remote", &url, &nostr_ref]);
    assert!(listed.starts_with(&tip), "A serves {nostr_ref} at the pull request's tip: {listed:?}");
    wait_metric(&a, "grasp_hunt_released_total{type=\"pull_request\"} ", |n| n == 1).await;
}

#[tokio::test]
async fn ids_split_across_two_remotes_are_gathered() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let plain = GitHttpBackend::start();
    let owner = Keys::generate();
    let clone =
        [a.clone_url(&owner.public_key(), D), b.clone_url(&owner.public_key(), D), plain.url("mirror")];
    let ann = announce(&owner, &clone, &[&a, &b]);
    let work = Workdir::new();
    let main = work.commit("README", b"on B");
    let first = state(&owner, &[("refs/heads/main", &main)], 0);
    host_on(&b, &owner, &ann, &first, &work).await;
    // A branch that only the plain git server has.
    work.ok(&["checkout", "-q", "-b", "feature"]);
    let feature = work.commit("feature", b"only on the plain server");
    work.ok(&["push", plain.repo("mirror").to_str().unwrap(), "feature"]);

    let both = state(&owner, &[("refs/heads/main", &main), ("refs/heads/feature", &feature)], 1);
    assert_eq!(publish(&a, &ann).await, (true, HELD.to_owned()));
    assert_eq!(publish(&a, &both).await, (true, HELD.to_owned()));
    wait_served(&a, &both, "state released once ids from both remotes landed").await;
    wait_refs(&a, &owner, &[("refs/heads/feature", &feature), ("refs/heads/main", &main)]).await;
    // One fetch from each remote.
    wait_metric(&a, "grasp_hunt_fetches_total{result=\"objects\"} ", |n| n == 2).await;
}

#[tokio::test]
async fn an_unreachable_remote_is_skipped_and_retried_with_backoff_while_the_other_succeeds() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let owner = Keys::generate();
    let dead = refused_url("nobody/repo.git");
    let clone = [a.clone_url(&owner.public_key(), D), dead.clone(), b.clone_url(&owner.public_key(), D)];
    let ann = announce(&owner, &clone, &[&a, &b]);
    let work = Workdir::new();
    let c1 = work.commit("README", b"one");
    let first = state(&owner, &[("refs/heads/main", &c1)], 0);
    host_on(&b, &owner, &ann, &first, &work).await;

    // A newer state whose data exists nowhere keeps the repository queued.
    let nowhere = state(&owner, &[("refs/heads/main", &"9".repeat(40))], 1);
    assert_eq!(publish(&a, &ann).await, (true, HELD.to_owned()));
    assert_eq!(publish(&a, &first).await, (true, HELD.to_owned()));
    assert_eq!(publish(&a, &nowhere).await, (true, HELD.to_owned()));
    wait_served(&a, &first, "the state whose data is on B is released despite the dead remote").await;
    assert!(!served(&a, &nowhere).await);

    // The dead remote keeps being tried, attempt after attempt, with growing pauses.
    wait_metric(&a, "grasp_hunt_fetches_total{result=\"error\"} ", |n| n >= 3).await;
    let entry = listed(&a, &nowhere).expect("still held");
    assert!(entry["hunt_attempts"].as_u64().unwrap() >= 2, "{entry}");
    assert!(entry["next_hunt_at"].as_u64().is_some(), "{entry}");
    let tried = entry["tried_urls"].as_array().unwrap();
    let result_of =
        |url: &str| tried.iter().find(|t| t["url"] == url).map(|t| t["result"].as_str().unwrap().to_owned());
    assert!(result_of(&dead).unwrap().starts_with("failed:"), "{entry}");
    assert_eq!(result_of(&clone[2]).as_deref(), Some("had none of the missing objects"), "{entry}");
    assert!(result_of(&clone[0]).is_none(), "A never fetches from itself: {entry}");
    let table = a.purgatory_table();
    assert!(table.contains("NEXT HUNT") && table.contains(&format!("tried {dead}: failed")), "{table}");
    assert!(metric(&a, "grasp_hunt_attempts_total{result=\"waiting\"} ").await >= 2);
}

#[tokio::test]
async fn a_huge_pack_is_cut_off_by_the_size_cap_and_nothing_of_it_lands() {
    let a = TestServer::builder().arg("--hunt-max-fetch-size=1000000").start();
    let plain = GitHttpBackend::start();
    let owner = Keys::generate();
    let work = Workdir::new();
    std::fs::write(work.path().join("big.bin"), incompressible(6 * 1024 * 1024)).unwrap();
    let big = work.commit("README", b"big");
    work.ok(&["push", plain.repo("big").to_str().unwrap(), "main"]);

    let ann = announce(&owner, &[a.clone_url(&owner.public_key(), D), plain.url("big")], &[&a]);
    let s = state(&owner, &[("refs/heads/main", &big)], 0);
    assert_eq!(publish(&a, &ann).await, (true, HELD.to_owned()));
    assert_eq!(publish(&a, &s).await, (true, HELD.to_owned()));
    let entry = wait_until("the fetch was cut off", LONG, || async {
        listed(&a, &s).filter(|e| e.to_string().contains("cut off: more than 1000000 bytes"))
    })
    .await;
    assert!(!served(&a, &s).await, "still held: {entry}");
    let repo = a.repo_path(&owner.public_key(), D);
    assert!(!object_exists(&repo, &big), "nothing of the cut-off fetch landed");
    let size = git_ok(&repo, &["count-objects", "-v"]);
    assert!(size.contains("size-pack: 0") && size.contains("count: 0"), "{size}");
    let quarantine = a.data_dir().join("repos").join(".hunt-quarantine");
    wait_until("the quarantine is cleaned up", LONG, || async {
        std::fs::read_dir(&quarantine).map_or(true, |mut d| d.next().is_none()).then_some(())
    })
    .await;
    assert!(metric(&a, "grasp_hunt_fetches_total{result=\"too_large\"} ").await >= 1);
}

#[tokio::test]
async fn a_remote_that_never_answers_times_out_without_holding_up_other_repositories() {
    let a = TestServer::builder().arg("--hunt-fetch-timeout-secs=15").start();
    let b = TestServer::start();
    let silent = SilentRemote::start();
    let (owner, other) = (Keys::generate(), Keys::generate());
    // `owner`'s repository lists the silent remote first; `other`'s does not list it.
    let slow_ann = announce(
        &owner,
        &[a.clone_url(&owner.public_key(), D), silent.url("hang.git"), b.clone_url(&owner.public_key(), D)],
        &[&a, &b],
    );
    let quick_ann = events::announcement_with(
        &other,
        "other",
        &[a.clone_url(&other.public_key(), "other"), b.clone_url(&other.public_key(), "other")],
        &[a.ws_url(), b.ws_url()],
        &[],
    );
    let work = Workdir::new();
    let c1 = work.commit("README", b"data");
    let slow_state = state(&owner, &[("refs/heads/main", &c1)], 0);
    host_on(&b, &owner, &slow_ann, &slow_state, &work).await;
    let quick_state = events::state(&other, "other", &[("refs/heads/main", &c1)], Some("main"));
    assert!(publish(&b, &quick_ann).await.0);
    assert!(publish(&b, &quick_state).await.0);
    work.ok(&["push", &b.clone_url(&other.public_key(), "other"), "main"]);
    wait_served(&b, &quick_state, "second repository served on B").await;

    for event in [&slow_ann, &slow_state, &quick_ann, &quick_state] {
        assert_eq!(publish(&a, event).await, (true, HELD.to_owned()));
    }
    wait_served(&a, &quick_state, "the other repository is released while the silent remote hangs").await;
    assert!(!served(&a, &slow_state).await, "still waiting for the silent remote (15 s timeout)");
    wait_served(&a, &slow_state, "released from B once the silent remote timed out").await;
    wait_metric(&a, "grasp_hunt_fetches_total{result=\"timeout\"} ", |n| n == 1).await;
    wait_metric(&a, "grasp_hunt_fetches_in_flight ", |n| n == 0).await;
    drop(silent);
}

#[tokio::test]
async fn a_remote_that_refuses_unadvertised_objects_is_fetched_by_its_refs() {
    let a = TestServer::start();
    let plain = GitHttpBackend::start_v0_only();
    let owner = Keys::generate();
    let work = Workdir::new();
    let older = work.commit("README", b"one");
    work.commit("README", b"two"); // the remote's main is newer than what the state names
    work.ok(&["push", plain.repo("old").to_str().unwrap(), "main"]);

    let ann = announce(&owner, &[a.clone_url(&owner.public_key(), D), plain.url("old")], &[&a]);
    let s = state(&owner, &[("refs/heads/main", &older)], 0);
    assert_eq!(publish(&a, &ann).await, (true, HELD.to_owned()));
    assert_eq!(publish(&a, &s).await, (true, HELD.to_owned()));
    wait_served(&a, &s, "released after fetching the remote's refs").await;
    wait_refs(&a, &owner, &[("refs/heads/main", &older)]).await;
}

#[tokio::test]
async fn sigkill_while_a_hunt_is_pending_then_the_restarted_server_releases_the_event() {
    let mut a = TestServer::builder().arg("--hunt-client-delay-ms=5000").start();
    let b = TestServer::start();
    let owner = Keys::generate();
    let ann = announce(
        &owner,
        &[a.clone_url(&owner.public_key(), D), b.clone_url(&owner.public_key(), D)],
        &[&a, &b],
    );
    let work = Workdir::new();
    let c1 = work.commit("README", b"survives");
    let s = state(&owner, &[("refs/heads/main", &c1)], 0);
    host_on(&b, &owner, &ann, &s, &work).await;

    assert_eq!(publish(&a, &ann).await, (true, HELD.to_owned()));
    assert_eq!(publish(&a, &s).await, (true, HELD.to_owned()));
    let entry = wait_until("the pending hunt is on disk", LONG, || async {
        listed(&a, &s).filter(|e| e["next_hunt_at"].is_u64())
    })
    .await;
    assert!(entry.get("tried_urls").is_none(), "not attempted yet: {entry}");
    a.restart(); // SIGKILL, then the same data directory
    wait_served(&a, &s, "released by the restarted server's hunt").await;
    wait_refs(&a, &owner, &[("refs/heads/main", &c1)]).await;
}

#[tokio::test]
async fn a_hunted_pull_request_commit_lands_only_in_the_repository_it_tags() {
    let a = TestServer::start();
    let plain = GitHttpBackend::start();
    let client = a.client().await;
    // Two owners host a repository of the same name; hunting lands fetched data in the
    // first of them (by key order), which is the one the pull request does not tag.
    let (mut tagged, mut other) = (Keys::generate(), Keys::generate());
    if tagged.public_key() < other.public_key() {
        std::mem::swap(&mut tagged, &mut other);
    }
    let repo = grasp_tests::host_repository(&a, &client, &tagged, D, &[]).await;
    grasp_tests::host_repository(&a, &client, &other, D, &[]).await;
    let work = Workdir::clone_from(&a.clone_url(&tagged.public_key(), D), &[]);
    let tip = work.commit("feature", b"a contribution");
    work.ok(&["push", plain.repo("fork").to_str().unwrap(), "HEAD:refs/heads/feature"]);

    let pr = events::pull_request(&Keys::generate(), &repo, &tip, &plain.url("fork"));
    assert_eq!(publish(&a, &pr).await, (true, HELD.to_owned()));
    wait_served(&a, &pr, "pull request released by hunting").await;
    let nostr_ref = format!("refs/nostr/{}", pr.id.to_hex());
    let tagged_path = a.repo_path(&tagged.public_key(), D);
    let other_path = a.repo_path(&other.public_key(), D);
    assert_eq!(git_ok(&tagged_path, &["for-each-ref", "--format=%(objectname)", &nostr_ref]), tip);
    assert_eq!(
        git_ok(&other_path, &["for-each-ref", "--format=%(objectname)", &nostr_ref]),
        "",
        "the other owner's repository of the same name does not get the pull request"
    );
}
