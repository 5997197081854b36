//! The PostgreSQL backend as an operator meets it: `grasp-server migrate`, a clear failure
//! when the database cannot be reached, and two nodes on one database serving each other's
//! events, live included. (The whole suite also runs on PostgreSQL: `GRASP_TEST_BACKEND=postgres`.)

use std::process::Command;
use std::time::Duration;

use grasp_tests::events;
use grasp_tests::postgres::{admin_url, TestDatabase};
use grasp_tests::server::binary;
use grasp_tests::{fetch, host_repository, publish, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::json;

fn grasp_server(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("grasp-server"))
        .args(args)
        .env_remove("GRASP_LOG_LEVEL")
        .env_remove("GRASP_DATABASE_URL")
        .env_remove("GRASP_DATABASE_BACKEND")
        .output()
        .expect("run grasp-server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn migrate_applies_the_schema_once() {
    let Some(admin) = admin_url("migrate_applies_the_schema_once") else { return };
    let db = TestDatabase::create(&admin);
    let url = format!("--database-url={}", db.url);
    let (code, stdout, stderr) = grasp_server(&["migrate", "--database-backend=postgres", &url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("applied schema migrations 1, 2"), "{stdout}");
    let (code, stdout, stderr) = grasp_server(&["migrate", "--database-backend=postgres", &url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("schema is up to date (version 2)"), "second run: {stdout}");
}

#[test]
fn postgres_settings_that_cannot_work_fail_in_one_line() {
    // A closed port: nothing listens on 127.0.0.1:1.
    let unreachable = "--database-url=postgres://grasp:hunter2@127.0.0.1:1/grasp";
    for (args, needle) in [
        (
            vec!["--database-backend=postgres"],
            "database_url: is required with database_backend = \"postgres\"",
        ),
        (vec!["--database-url=postgres://127.0.0.1/grasp"], "database_url: is only read by database_backend"),
        (
            vec!["--database-backend=postgres", "--database-url=postgres://x@127.0.0.1/db?sslmode=bogus"],
            "database_url: not a valid PostgreSQL URL",
        ),
        (
            vec!["--database-backend=postgres", unreachable, "--bind-address=127.0.0.1:0"],
            "cannot open the event store in PostgreSQL: cannot connect to PostgreSQL at 127.0.0.1:1/grasp",
        ),
        (
            vec!["migrate", "--database-backend=postgres", unreachable],
            "migrate: cannot connect to PostgreSQL",
        ),
        (vec!["migrate"], "migrate: the schema migrations are PostgreSQL's, but database_backend is lmdb"),
    ] {
        let data = tempfile::tempdir().unwrap();
        let relay = format!("--relay-data-path={}", data.path().join("relay").display());
        let repos = format!("--git-data-path={}", data.path().join("repos").display());
        let mut all = args.clone();
        all.extend([relay.as_str(), repos.as_str()]);
        let (code, _, stderr) = grasp_server(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("grasp-server: ") && last.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "the password is never printed: {stderr}");
    }
}

#[tokio::test]
async fn two_nodes_on_one_database_serve_each_others_events() {
    let Some(admin) = admin_url("two_nodes_on_one_database_serve_each_others_events") else { return };
    let db = TestDatabase::create(&admin);
    let node = || {
        TestServer::builder()
            .arg("--database-backend=postgres")
            .arg(format!("--database-url={}", db.url))
            .start()
    };
    let (a, b) = (node(), node());
    let (on_a, on_b) = (a.client().await, b.client().await);
    let owner = Keys::generate();
    let coordinate = host_repository(&a, &on_a, &owner, "shared", &[]).await;
    let issue = events::issue(&Keys::generate(), &coordinate);
    publish(&on_a, &issue).await.expect("issue accepted by A");
    let seen_on_b = fetch(&on_b, Filter::new().id(issue.id)).await;
    assert_eq!(seen_on_b.iter().map(|e| e.id).collect::<Vec<_>>(), vec![issue.id], "B serves what A stored");
    // And the other way round, with a second issue B stores.
    let second = events::issue(&Keys::generate(), &coordinate);
    publish(&on_b, &second).await.expect("issue accepted by B");
    let issues = fetch(&on_a, Filter::new().kind(Kind::Custom(1621))).await;
    let mut ids: Vec<EventId> = issues.iter().map(|e| e.id).collect();
    ids.sort();
    let mut expected = vec![issue.id, second.id];
    expected.sort();
    assert_eq!(ids, expected, "A serves what B stored");
}

/// Live delivery across nodes: every subscriber gets every event exactly once, whichever
/// node stored it. Events go A, A, B, A: on each node, a copy of its own event coming back
/// through PostgreSQL would arrive before the next event the other node stored, so
/// collecting until all four have arrived catches a duplicate.
#[tokio::test]
async fn a_live_subscriber_on_one_node_gets_what_another_node_stored_exactly_once() {
    let test = "a_live_subscriber_on_one_node_gets_what_another_node_stored_exactly_once";
    let Some(admin) = admin_url(test) else { return };
    let db = TestDatabase::create(&admin);
    let node = || {
        TestServer::builder()
            .arg("--database-backend=postgres")
            .arg(format!("--database-url={}", db.url))
            .arg("--event-policy=accept-all")
            .start()
    };
    let (a, b) = (node(), node());
    let mut subscribers = Vec::new();
    for server in [&a, &b] {
        let mut raw = RawClient::connect(&server.ws_url()).await;
        assert_eq!(raw.req("live", &[json!({"kinds": [1], "limit": 0})]).await, Ok(vec![]));
        subscribers.push(raw);
    }
    let (mut to_a, mut to_b) = (RawClient::connect(&a.ws_url()).await, RawClient::connect(&b.ws_url()).await);
    let keys = Keys::generate();
    let mut sent = Vec::new();
    for (i, via_a) in [true, true, false, true].into_iter().enumerate() {
        let note = EventBuilder::text_note(format!("note {i}")).sign_with_keys(&keys).unwrap();
        let publisher = if via_a { &mut to_a } else { &mut to_b };
        assert!(publisher.publish(&events::json(&note)).await.0, "note {i} accepted");
        sent.push(note.id.to_hex());
    }
    for (name, subscriber) in ["A", "B"].into_iter().zip(subscribers.iter_mut()) {
        let mut received: Vec<String> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !sent.iter().all(|id| received.contains(id)) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = subscriber
                .try_recv(left)
                .await
                .unwrap_or_else(|| panic!("subscriber on {name} got only {received:?} of {sent:?}"));
            if message[0] == "EVENT" {
                received.push(message[2]["id"].as_str().unwrap().to_owned());
            }
        }
        let mut unique = received.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), received.len(), "subscriber on {name} got a duplicate: {received:?}");
    }
}
