//! Interoperability with stock git clients and peer servers, black-box: a new repository
//! looks like `git init --bare` made it, and events whose git data can never arrive (ref
//! values or `c` tags that are not full object ids) are held, never served, and expire.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use grasp_tests::events::{self, coordinate};
use grasp_tests::git::Workdir;
use grasp_tests::{frontend_tests, host_repository, wait_until, Frontend, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::json;

const D: &str = "repo";
const HELD: &str = "purgatory: won't be served until git data arrives";

/// What `git init --bare` writes to HEAD with the given global git configuration.
fn git_init_bare_head(global_config: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.git");
    let status = Command::new("git")
        .args(["init", "--bare", "-q"])
        .arg(&reference)
        .env("GIT_CONFIG_GLOBAL", global_config)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(reference.join("HEAD")).unwrap()
}

async fn served(server: &TestServer, id: &EventId) -> bool {
    let mut probe = RawClient::connect(&server.ws_url()).await;
    !probe.req("served?", &[json!({"ids": [id.to_hex()]})]).await.unwrap().is_empty()
}

/// Clone the empty repository, commit, `git branch main`, `git checkout main`, publish the
/// state, push: the flow a client uses against any stock git server.
async fn stock_client_flow(frontend: Frontend, global_config: &Path) {
    let server = frontend
        .builder()
        .env("GIT_CONFIG_GLOBAL", global_config.display().to_string())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .start();
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let owner = Keys::generate();
    let ann = events::announcement(&owner, D, &server.addr, &[]);
    assert_eq!(raw.publish(&events::json(&ann)).await, (true, HELD.to_owned()));

    let repo_path = server.repo_path(&owner.public_key(), D);
    let head = std::fs::read_to_string(repo_path.join("HEAD")).unwrap();
    assert_eq!(head, git_init_bare_head(global_config), "a new repository's HEAD is git's own default");

    let url = server.clone_url(&owner.public_key(), D);
    let work = Workdir::clone_from(&url, &[]);
    let unborn = work.ok(&["symbolic-ref", "HEAD"]);
    assert_eq!(format!("ref: {unborn}\n"), head, "the clone copies the server's unborn HEAD");
    assert_ne!(unborn, "refs/heads/main", "the flow below only means something when the default is not main");
    let commit = work.commit("README", b"hello");
    work.ok(&["branch", "main"]);
    work.ok(&["checkout", "-q", "main"]);

    let state = events::state(&owner, D, &[("refs/heads/main", &commit)], Some("main"));
    assert_eq!(raw.publish(&events::json(&state)).await, (true, HELD.to_owned()));
    work.ok(&["push", "origin", "main"]);
    assert!(served(&server, &state.id).await, "the push released the state");
    assert!(served(&server, &ann.id).await, "and the announcement");
    let head = std::fs::read_to_string(repo_path.join("HEAD")).unwrap();
    assert_eq!(head, "ref: refs/heads/main\n", "the state set HEAD");
}

async fn a_new_repository_has_gits_built_in_default_head_and_stock_clients_work(frontend: Frontend) {
    stock_client_flow(frontend, Path::new("/dev/null")).await;
}

async fn a_new_repository_follows_the_operators_init_default_branch(frontend: Frontend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gitconfig");
    std::fs::write(&config, "[init]\n\tdefaultBranch = trunk\n").unwrap();
    assert_eq!(git_init_bare_head(&config), "ref: refs/heads/trunk\n");
    stock_client_flow(frontend, &config).await;
}

/// States whose ref values are short, non-hex, or partly valid, and a pull request whose
/// `c` is short, signed after `host_repository`'s state.
fn malformed_events(owner: &Keys, valid: &str) -> Vec<Event> {
    let at = |n: u64| Timestamp::from(Timestamp::now().as_secs() + n);
    let non_hex = "z".repeat(40);
    vec![
        events::state_at(owner, D, &[("refs/heads/main", "abc123")], Some("main"), at(1)),
        events::state_at(owner, D, &[("refs/heads/main", &non_hex)], Some("main"), at(2)),
        events::state_at(
            owner,
            D,
            &[("refs/heads/main", valid), ("refs/tags/v1", "abc123")],
            Some("main"),
            at(3),
        ),
        events::pull_request(
            &Keys::generate(),
            &coordinate(&owner.public_key(), D),
            "abc123",
            "http://127.0.0.1:1/x.git",
        ),
    ]
}

async fn malformed_ref_values_and_pr_commits_are_held_never_served_and_never_authorize(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let owner = Keys::generate();
    host_repository(&server, &client, &owner, D, &[]).await;
    let url = server.clone_url(&owner.public_key(), D);
    let work = Workdir::clone_from(&url, &[]);
    let next = work.commit("next", b"a commit whose id one state names correctly");
    let before = work.ok(&["ls-remote", &url]);

    let mut raw = RawClient::connect(&server.ws_url()).await;
    let held = malformed_events(&owner, &next);
    for event in &held {
        assert_eq!(raw.publish(&events::json(event)).await, (true, HELD.to_owned()), "{}", event.as_json());
    }
    for event in &held {
        assert!(!served(&server, &event.id).await, "held event served: {}", event.as_json());
    }
    let listed = server.purgatory_list();
    assert_eq!(listed.len(), held.len(), "{listed:#?}");
    assert!(
        listed.iter().all(|e| e["waiting_for"].as_str().unwrap().contains("nothing that can arrive")),
        "{listed:#?}"
    );

    // The third state's valid part matches this push; it must not authorize it.
    let out = work.fails(&["push", &url, &format!("{next}:refs/heads/main")]);
    assert!(out.contains("do not match the latest state"), "{out}");
    // A push to the pull request's ref can never match its malformed `c`.
    let pr = &held[3];
    let out = work.fails(&["push", &url, &format!("{next}:refs/nostr/{}", pr.id.to_hex())]);
    assert!(out.contains("not a full commit id"), "{out}");
    assert_eq!(work.ok(&["ls-remote", &url]), before, "nothing changed on the server");
    for event in &held {
        assert!(!served(&server, &event.id).await, "held event served after pushes: {}", event.as_json());
    }
}

async fn malformed_states_and_pull_requests_expire_unserved(frontend: Frontend) {
    let server = frontend.builder().arg("--purgatory-expiry-secs=2").start();
    let client = server.client().await;
    let owner = Keys::generate();
    host_repository(&server, &client, &owner, D, &[]).await;
    let next = Workdir::new().commit("x", b"never pushed");
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let held = malformed_events(&owner, &next);
    for event in &held {
        assert_eq!(raw.publish(&events::json(event)).await, (true, HELD.to_owned()));
    }
    wait_until("every malformed event has expired", Duration::from_secs(30), || {
        let empty = server.purgatory_list().is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    for event in &held {
        assert!(!served(&server, &event.id).await, "expired event served: {}", event.as_json());
    }
    let metrics = server.metrics().await;
    for line in [
        "grasp_purgatory_expired_total{type=\"state\"} 3",
        "grasp_purgatory_expired_total{type=\"pull_request\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
}

frontend_tests!(
    a_new_repository_has_gits_built_in_default_head_and_stock_clients_work,
    a_new_repository_follows_the_operators_init_default_branch,
    malformed_ref_values_and_pr_commits_are_held_never_served_and_never_authorize,
    malformed_states_and_pull_requests_expire_unserved,
);
