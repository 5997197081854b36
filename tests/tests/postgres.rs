//! The PostgreSQL backend as an operator meets it: `grasp-server migrate`, a clear failure
//! when the database cannot be reached, and two nodes on one database serving each other's
//! events. (The whole suite also runs on PostgreSQL: `GRASP_TEST_BACKEND=postgres`.)

use std::process::Command;

use grasp_tests::events;
use grasp_tests::postgres::{admin_url, TestDatabase};
use grasp_tests::server::binary;
use grasp_tests::{fetch, host_repository, publish, TestServer};
use nostr_sdk::prelude::*;

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
    assert!(stdout.contains("applied schema migrations 1"), "{stdout}");
    let (code, stdout, stderr) = grasp_server(&["migrate", "--database-backend=postgres", &url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("schema is up to date (version 1)"), "second run: {stdout}");
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
