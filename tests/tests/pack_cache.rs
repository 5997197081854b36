//! The pack-objects cache from outside: real `git clone`s of every kind (protocol v0 and v2,
//! shallow, partial) come from the cache once a request was seen twice, and are correct
//! (`git fsck`); different requests get different packs; a push makes the next clone
//! fresh; concurrent identical clones share one generation; a client that hangs up while
//! its pack is being written leaves a good entry; a disk under the free-space floor gets
//! no entries and clones still work; a push leaves a bitmap and a commit-graph. Both frontends (grasp-proxy's upstream runs the hook
//! through nginx's `GIT_CONFIG_*`).

use std::path::Path;
use std::time::Duration;

use grasp_tests::events;
use grasp_tests::git::{hang_up_mid_upload_pack, v0_clone_body, Workdir};
use grasp_tests::memory::write_random_file;
use grasp_tests::poll::wait_until;
use grasp_tests::sync::metric_sum;
use grasp_tests::{frontend_tests, publish, Frontend, TestServer};
use nostr_sdk::prelude::*;

const D: &str = "cached";

/// The cache's counters as `/metrics` shows them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counters {
    hits: f64,
    misses: f64,
    entries: f64,
}

async fn counters(server: &TestServer) -> Counters {
    let m = server.metrics().await;
    Counters {
        hits: metric_sum(&m, "grasp_pack_cache_hits_total", &[]),
        misses: metric_sum(&m, "grasp_pack_cache_misses_total", &[]),
        entries: metric_sum(&m, "grasp_pack_cache_entries", &[]),
    }
}

/// A hosted repository with `size` random bytes, two commits and an annotated tag.
async fn hosted(server: &TestServer, size: u64) -> (String, Workdir, Keys) {
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, D, &server.addr, &[])).await.unwrap();
    let work = Workdir::new();
    work.commit("src/lib.rs", b"fn one() {}\n");
    write_random_file(&work.path().join("random.bin"), size);
    work.ok(&["add", "random.bin"]);
    work.ok(&["commit", "-q", "-m", "data"]);
    work.ok(&["tag", "-a", "v1", "-m", "release"]);
    let tip = work.rev("HEAD");
    let tag = work.rev("v1");
    publish(
        &client,
        &events::state(&owner, D, &[("refs/heads/main", &tip), ("refs/tags/v1", &tag)], Some("main")),
    )
    .await
    .unwrap();
    let url = server.clone_url(&owner.public_key(), D);
    work.ok(&["push", "-q", &url, "main", "v1"]);
    (url, work, owner)
}

/// A clone with `options`, checked with `git fsck`.
fn checked_clone(url: &str, options: &[&str]) -> Workdir {
    let clone = Workdir::clone_from(url, options);
    clone.ok(&["fsck", "--no-progress"]);
    clone
}

/// Clones three times with `options`: the first sighting, the one that writes the entry, and
/// one from the cache; returns the last clone.
async fn thrice(server: &TestServer, url: &str, options: &[&str]) -> Workdir {
    let before = counters(server).await;
    checked_clone(url, options);
    checked_clone(url, options);
    let third = checked_clone(url, options);
    let after = counters(server).await;
    assert!(after.hits > before.hits, "{options:?}: the third clone is a hit ({before:?} -> {after:?})");
    third
}

fn has_missing_objects(dir: &Path) -> bool {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args(["rev-list", "--objects", "--missing=print", "--all"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with('?'))
}

async fn every_kind_of_clone_is_served_from_the_cache_and_correct(frontend: Frontend) {
    let server = frontend.start();
    let (url, work, _) = hosted(&server, 256 << 10).await;
    let tip = work.rev("HEAD");
    for version in ["0", "2"] {
        let protocol = format!("protocol.version={version}");
        let clone = thrice(&server, &url, &["-c", &protocol]).await;
        assert_eq!(clone.rev("HEAD"), tip);
        assert_eq!(clone.rev("v1^{tag}"), work.rev("v1"), "the tag came along");
    }
    let shallow = thrice(&server, &url, &["--depth=1"]).await;
    assert_eq!(shallow.ok(&["rev-list", "--count", "HEAD"]), "1", "a shallow request got a shallow pack");
    let partial = thrice(&server, &url, &["--filter=blob:none", "--no-checkout"]).await;
    assert!(has_missing_objects(partial.path()), "a blob:none request got a pack without blobs");
    let full = checked_clone(&url, &["--no-checkout"]);
    assert!(!has_missing_objects(full.path()), "a full request still gets every blob");
    let c = counters(&server).await;
    assert!(c.entries >= 3.0, "full, shallow and partial packs are different entries: {c:?}");
}

async fn a_push_makes_the_next_clone_fresh(frontend: Frontend) {
    let server = frontend.start();
    let (url, work, owner) = hosted(&server, 64 << 10).await;
    thrice(&server, &url, &[]).await;
    let next = work.commit("NEWS", b"more\n");
    let client = server.client().await;
    publish(
        &client,
        &events::state_at(
            &owner,
            D,
            &[("refs/heads/main", &next), ("refs/tags/v1", &work.rev("v1"))],
            Some("main"),
            Timestamp::now() + 1,
        ),
    )
    .await
    .unwrap();
    work.ok(&["push", "-q", &url, "main"]);
    let clone = checked_clone(&url, &[]);
    assert_eq!(clone.rev("HEAD"), next, "the clone after the push has the pushed commit");
}

async fn concurrent_identical_clones_share_one_generation(frontend: Frontend) {
    let server = frontend.start();
    let (url, work, _) = hosted(&server, 8 << 20).await;
    checked_clone(&url, &["--no-checkout"]);
    let before = counters(&server).await;
    let clones: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || checked_clone(&url, &["--no-checkout"]).rev("HEAD"))
        })
        .collect();
    for clone in clones {
        assert_eq!(clone.join().unwrap(), work.rev("HEAD"));
    }
    let after = counters(&server).await;
    assert_eq!(after.misses - before.misses, 1.0, "one pack-objects for six clones: {before:?} -> {after:?}");
    assert_eq!(after.hits - before.hits, 5.0, "{before:?} -> {after:?}");
}

async fn a_client_hanging_up_mid_pack_leaves_a_good_entry(frontend: Frontend) {
    let server = frontend.start();
    let (url, work, _) = hosted(&server, 24 << 20).await;
    let tip = work.rev("HEAD");
    // A plain protocol v0 request (no capabilities): first sighting, then the one that
    // writes the entry, whose client reads the start and resets the connection.
    let path = url.strip_prefix(&server.http_url()).unwrap();
    let body = v0_clone_body(&tip);
    let fetch = || {
        std::process::Command::new("curl")
            .args([
                "-sf",
                "-H",
                "Content-Type: application/x-git-upload-pack-request",
                "--data-binary",
                &body,
            ])
            .arg(format!("{url}/git-upload-pack"))
            .output()
            .unwrap()
    };
    assert!(fetch().status.success());
    let start = hang_up_mid_upload_pack(&server.addr, path, &body).await;
    assert!(start.starts_with("HTTP/1.1 200"), "{start}");
    // The writer finishes the entry for the next client.
    wait_until("the entry is complete", Duration::from_secs(60), || async {
        let c = counters(&server).await;
        (c.entries >= 1.0).then_some(())
    })
    .await;
    let before = counters(&server).await;
    // The same request again is a hit, and a good one.
    let out = fetch();
    assert!(out.status.success());
    let after = counters(&server).await;
    assert_eq!(after.hits - before.hits, 1.0, "served from the entry: {before:?} -> {after:?}");
    let pack = pack_of(&out.stdout);
    let dir = tempfile::tempdir().unwrap();
    grasp_tests::git::git_ok(dir.path(), &["init", "-q", "--bare", "check.git"]);
    let check = dir.path().join("check.git");
    let mut index = std::process::Command::new("git")
        .current_dir(&check)
        .args(["index-pack", "--stdin", "--fix-thin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    index.stdin.take().unwrap().write_all(&pack).unwrap();
    assert!(index.wait().unwrap().success(), "the cached pack indexes");
    grasp_tests::git::git_ok(&check, &["update-ref", "refs/heads/main", &tip]);
    grasp_tests::git::git_ok(&check, &["fsck", "--no-progress"]);
}

/// The pack inside a protocol v0 upload-pack answer without side-band: after `NAK`.
fn pack_of(answer: &[u8]) -> Vec<u8> {
    let at = answer.windows(4).position(|w| w == b"PACK").expect("a pack in the answer");
    answer[at..].to_vec()
}

/// Under the free-space floor nothing is written; clones still work, uncached.
#[tokio::test]
async fn a_disk_under_the_floor_gets_no_entries_and_clones_still_work() {
    let server = TestServer::builder().arg(format!("--pack-cache-min-free-bytes={}", i64::MAX)).start();
    let (url, work, _) = hosted(&server, 64 << 10).await;
    for _ in 0..3 {
        assert_eq!(checked_clone(&url, &[]).rev("HEAD"), work.rev("HEAD"));
    }
    let c = counters(&server).await;
    assert_eq!((c.hits, c.entries), (0.0, 0.0), "{c:?}");
    assert!(c.misses >= 3.0, "{c:?}");
    let packs = walk(&server.data_dir().join("relay/pack-cache"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack" || e == "partial"))
        .count();
    assert_eq!(packs, 0);
}

/// After a push the repository gets a reachability bitmap and a commit-graph in the
/// background, so the next clones count objects quickly.
#[tokio::test]
async fn a_push_leaves_a_bitmap_and_a_commit_graph() {
    let server = TestServer::start();
    let (_url, _work, owner) = hosted(&server, 16 << 10).await;
    let repo = server.repo_path(&owner.public_key(), D);
    let ready = || {
        let files = walk(&repo.join("objects"));
        let bitmap = files.iter().any(|p| p.extension().is_some_and(|e| e == "bitmap"));
        bitmap && repo.join("objects/info/commit-graphs/commit-graph-chain").exists()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "no bitmap and commit-graph after 60 s: {:?}\n{}",
            walk(&repo.join("objects")),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    grasp_tests::git::git_ok(&repo, &["commit-graph", "verify", "--no-progress"]);
}

/// Clients of different git versions send different requests (their `agent`), so each
/// answer is computed anew, but the pack-objects hook sees the same wants and serves the
/// pack from its entry.
async fn requests_that_differ_only_in_their_agent_share_one_pack(frontend: Frontend) {
    let server = frontend.start();
    let (url, work, _) = hosted(&server, 256 << 10).await;
    let before = counters(&server).await;
    for agent in ["git/first", "git/second", "git/third"] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("git")
            .env("GIT_USER_AGENT", agent)
            .args(["clone", "-q", "--bare", &url, "c.git"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let clone = dir.path().join("c.git");
        grasp_tests::git::git_ok(&clone, &["fsck", "--no-progress"]);
        assert_eq!(grasp_tests::git::git_ok(&clone, &["rev-parse", "main"]), work.rev("HEAD"));
    }
    let after = counters(&server).await;
    assert_eq!(
        after.hits - before.hits,
        1.0,
        "the third clone's pack came from the hook: {before:?} -> {after:?}"
    );
    assert_eq!(after.misses - before.misses, 2.0, "{before:?} -> {after:?}");
}

/// grasp-server keeps upload-pack's whole answer: a repeated clone runs no git at all, so
/// it is served even while the repository's objects are out of git's reach.
#[tokio::test]
async fn grasp_server_answers_a_repeated_clone_without_running_git() {
    let server = TestServer::start();
    let (url, work, owner) = hosted(&server, 256 << 10).await;
    thrice(&server, &url, &["--no-checkout"]).await;
    // Only the annotated tag stays readable (the advertisement peels it); the commits and
    // blobs upload-pack would need go away (once the push's background repack is done).
    let repo = server.repo_path(&owner.public_key(), D);
    wait_until("the push's repack", Duration::from_secs(60), || async {
        let files = walk(&repo.join("objects"));
        files.iter().any(|p| p.extension().is_some_and(|e| e == "bitmap")).then_some(())
    })
    .await;
    let tag = grasp_tests::git::git_ok(&repo, &["cat-file", "tag", "v1"]);
    let objects = repo.join("objects");
    let away = server.data_dir().join("objects-away");
    std::fs::rename(&objects, &away).unwrap();
    std::fs::create_dir_all(objects.join("pack")).unwrap();
    let written = std::process::Command::new("git")
        .current_dir(&repo)
        .args(["hash-object", "-t", "tag", "-w", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(format!("{tag}\n").as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(written.success());
    let before = counters(&server).await;
    let clone = Workdir::clone_from(&url, &["--no-checkout"]);
    let after = counters(&server).await;
    // Another request (a different key) needs git, which cannot read the objects.
    let other = std::process::Command::new("git")
        .args(["clone", "-q", "--depth=1", "--no-checkout", &url])
        .arg(server.data_dir().join("shallow"))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&objects).unwrap();
    std::fs::rename(&away, &objects).unwrap();
    assert!(!other.status.success(), "git really could not read the objects");
    clone.ok(&["fsck", "--no-progress"]);
    assert_eq!(clone.rev("HEAD"), work.rev("HEAD"));
    assert_eq!(after.hits - before.hits, 1.0, "{before:?} -> {after:?}");
}

/// With the cache off nothing is written and no metrics are shown.
#[tokio::test]
async fn the_cache_can_be_switched_off() {
    let server = TestServer::builder().arg("--pack-cache=false").start();
    let (url, _work, _) = hosted(&server, 16 << 10).await;
    checked_clone(&url, &[]);
    checked_clone(&url, &[]);
    assert!(!server.metrics().await.contains("grasp_pack_cache_"));
    assert!(!server.data_dir().join("relay/pack-cache").exists());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

frontend_tests!(
    requests_that_differ_only_in_their_agent_share_one_pack,
    every_kind_of_clone_is_served_from_the_cache_and_correct,
    a_push_makes_the_next_clone_fresh,
    concurrent_identical_clones_share_one_generation,
    a_client_hanging_up_mid_pack_leaves_a_good_entry,
);
