//! Cloning and fetching with the real git CLI: empty and populated repositories, protocol
//! v0 and v2, partial clones and fetching an unadvertised commit by id; a client that hangs
//! up in the middle of a clone.

use std::time::Duration;

use grasp_tests::events;
use grasp_tests::git::{git, hang_up_mid_upload_pack, v0_clone_body, Workdir};
use grasp_tests::memory::write_random_file;
use grasp_tests::poll::wait_until;
use grasp_tests::{frontend_tests, publish, Frontend, TestServer};
use nostr_sdk::prelude::*;

const D: &str = "repo";

/// A server hosting one repository with two commits on main; returns (server, url, commits).
async fn populated(frontend: Frontend) -> (TestServer, String, Vec<String>) {
    let server = frontend.start();
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, D, &server.addr, &[])).await.unwrap();
    let work = Workdir::new();
    let c1 = work.commit("src/lib.rs", b"fn one() {}\n");
    let c2 = work.commit("src/main.rs", b"fn main() {}\n");
    publish(&client, &events::state(&owner, D, &[("refs/heads/main", &c2)], Some("main"))).await.unwrap();
    let url = server.clone_url(&owner.public_key(), D);
    work.ok(&["push", &url, "main"]);
    (server, url, vec![c1, c2])
}

async fn empty_repository_can_be_cloned(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, D, &server.addr, &[])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = git(dir.path(), &["clone", &server.clone_url(&owner.public_key(), D), "empty"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("empty repository"), "{stderr}");
}

async fn clone_and_fetch_over_protocol_v0_and_v2(frontend: Frontend) {
    let (_server, url, commits) = populated(frontend).await;
    for version in ["0", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("git")
            .current_dir(dir.path())
            .args(["-c", &format!("protocol.version={version}"), "clone", &url, "c"])
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TRACE_PACKET", "1")
            .output()
            .unwrap();
        let trace = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "protocol v{version} clone failed:\n{trace}");
        let spoke_v2 = trace.contains("< version 2");
        assert_eq!(spoke_v2, version == "2", "protocol v{version} negotiated wrongly");
        let head = String::from_utf8_lossy(&git(&dir.path().join("c"), &["rev-parse", "HEAD"]).stdout)
            .trim()
            .to_owned();
        assert_eq!(head, commits[1]);
    }
}

async fn fetch_brings_new_commits(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, D, &server.addr, &[])).await.unwrap();
    let url = server.clone_url(&owner.public_key(), D);
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    publish(
        &client,
        &events::state_at(
            &owner,
            D,
            &[("refs/heads/main", &c1)],
            Some("main"),
            Timestamp::from(Timestamp::now().as_secs() - 10),
        ),
    )
    .await
    .unwrap();
    work.ok(&["push", &url, "main"]);
    let reader = Workdir::clone_from(&url, &[]);
    let c2 = work.commit("a", b"2");
    publish(&client, &events::state(&owner, D, &[("refs/heads/main", &c2)], Some("main"))).await.unwrap();
    work.ok(&["push", &url, "main"]);
    reader.ok(&["fetch", "-q", "origin"]);
    assert_eq!(reader.rev("origin/main"), c2);
}

async fn partial_clones_honour_filters(frontend: Frontend) {
    let (_server, url, commits) = populated(frontend).await;
    let blobless = Workdir::clone_from(&url, &["--filter=blob:none", "--no-checkout"]);
    let missing = blobless.ok(&["rev-list", "--objects", "--all", "--missing=print"]);
    assert!(missing.lines().any(|l| l.starts_with('?')), "blob:none must leave blobs out:\n{missing}");
    blobless.ok(&["checkout", "-q", "main"]); // lazily fetches the blobs it needs
    assert_eq!(blobless.rev("HEAD"), commits[1]);

    let treeless = Workdir::clone_from(&url, &["--filter=tree:0", "--no-checkout"]);
    let missing = treeless.ok(&["rev-list", "--objects", "--all", "--missing=print"]);
    assert!(
        missing.lines().filter(|l| l.starts_with('?')).count() >= 2,
        "tree:0 must leave trees out:\n{missing}"
    );
    treeless.ok(&["checkout", "-q", "main"]);
    assert!(treeless.path().join("src/main.rs").exists());
}

async fn unadvertised_reachable_commit_can_be_fetched_by_id(frontend: Frontend) {
    let (_server, url, commits) = populated(frontend).await;
    let work = Workdir::new();
    for version in ["0", "2"] {
        work.ok(&["-c", &format!("protocol.version={version}"), "fetch", "-q", &url, &commits[0]]);
        assert_eq!(work.rev("FETCH_HEAD"), commits[0]);
    }
}

async fn shallow_clone_and_deepen(frontend: Frontend) {
    let (_server, url, commits) = populated(frontend).await;
    let shallow = Workdir::clone_from(&url, &["--depth=1"]);
    assert_eq!(shallow.rev("HEAD"), commits[1]);
    assert_eq!(shallow.ok(&["rev-list", "--count", "HEAD"]), "1");
    shallow.ok(&["fetch", "-q", "--unshallow"]);
    assert_eq!(shallow.ok(&["rev-list", "--count", "HEAD"]), "2");
}

/// A client that hangs up in the middle of a clone is routine, not a server failure: the
/// server logs no `ERROR` for it (grasp-proxy logged pingora's `Fail to proxy: Downstream
/// ReadError/WriteError`, found by the outside check) and keeps serving.
async fn a_client_hanging_up_mid_clone_logs_no_error(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, D, &server.addr, &[])).await.unwrap();
    let work = Workdir::new();
    // Far more than the socket buffers between server and client hold.
    write_random_file(&work.path().join("random.bin"), 32 << 20);
    work.ok(&["-c", "core.looseCompression=0", "add", "random.bin"]);
    work.ok(&["commit", "-q", "-m", "32 MiB of random data"]);
    let tip = work.rev("HEAD");
    publish(&client, &events::state(&owner, D, &[("refs/heads/main", &tip)], Some("main"))).await.unwrap();
    let url = server.clone_url(&owner.public_key(), D);
    work.ok(&["-c", "pack.compression=0", "push", "-q", &url, "main"]);

    // A protocol v0 clone request; the client reads the start of the answer and resets the
    // connection.
    let path = url.strip_prefix(&server.http_url()).unwrap();
    let start = hang_up_mid_upload_pack(&server.addr, path, &v0_clone_body(&tip)).await;
    assert!(start.starts_with("HTTP/1.1 200"), "{start}");

    // The server is done with the exchange once it has counted it.
    let counted = wait_until("the broken-off clone counted", Duration::from_secs(60), || async {
        let metrics = server.metrics().await;
        metrics
            .lines()
            .find(|l| l.starts_with(r#"ngit_git_operations_total{operation="clone","#) && l.ends_with(" 1"))
            .map(str::to_owned)
    })
    .await;
    assert!(counted.contains(r#"status="error""#), "{counted}");
    let log = server.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "a client hanging up was logged as an error:\n{}", errors.join("\n"));
    let clone = Workdir::clone_from(&url, &["--no-checkout"]);
    assert_eq!(clone.rev("HEAD"), tip);
}

frontend_tests!(
    a_client_hanging_up_mid_clone_logs_no_error,
    empty_repository_can_be_cloned,
    clone_and_fetch_over_protocol_v0_and_v2,
    fetch_brings_new_commits,
    partial_clones_honour_filters,
    unadvertised_reachable_commit_can_be_fetched_by_id,
    shallow_clone_and_deepen,
);
