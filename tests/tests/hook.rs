//! `grasp-hook` in front of stock git servers: a grasp node provisions repositories in the
//! directory `git daemon` / `git http-backend` serve, `grasp-hook install` puts the hooks
//! in place, and pushes are decided by the node (held events included) exactly as on the
//! inline server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use grasp_tests::events::{self, coordinate};
use grasp_tests::git::{bare_refs, Workdir};
use grasp_tests::stock::{grasp_hook, GitDaemon, HttpBackend};
use grasp_tests::{fetch, publish, wait_until, TestServer};
use nostr_sdk::prelude::*;

const D: &str = "hooked";

/// A node whose repositories a stock git server serves.
struct Node {
    server: TestServer,
    client: Client,
    owner: Keys,
}

impl Node {
    async fn start() -> Self {
        let server = TestServer::start();
        let client = server.client().await;
        Self { server, client, owner: Keys::generate() }
    }

    /// The node's `git_data_path`: the root the git server serves.
    fn root(&self) -> PathBuf {
        self.server.data_dir().join("repos")
    }

    fn socket(&self) -> String {
        self.server.local_api_socket().display().to_string()
    }

    fn repo(&self) -> PathBuf {
        self.server.repo_path(&self.owner.public_key(), D)
    }

    /// Publishes the announcement; the node creates the bare repository (held until data).
    async fn announce(&self) {
        let ann = events::announcement(&self.owner, D, &self.server.addr, &[]);
        publish(&self.client, &ann).await.expect("announcement accepted");
        assert!(self.repo().join("HEAD").is_file(), "the node provisioned the repository");
    }

    async fn state(&self, refs: &[(&str, &str)], at: u64) -> Event {
        let ev = events::state_at(&self.owner, D, refs, Some("main"), Timestamp::from(at));
        publish(&self.client, &ev).await.expect("state accepted (held)");
        ev
    }

    /// Waits until the relay serves the event with `id`.
    async fn served(&self, id: EventId) {
        let client = &self.client;
        wait_until("the released event is served on the relay", Duration::from_secs(30), || async move {
            (!fetch(client, Filter::new().id(id)).await.is_empty()).then_some(())
        })
        .await;
    }
}

fn rejected(output: &str, needle: &str) {
    assert!(output.contains("rejected by GRASP"), "git push did not show our reason:\n{output}");
    assert!(output.contains(needle), "expected '{needle}' in:\n{output}");
}

/// A forge's own hook: logs its input and checks that the pushed objects are readable (in
/// pre-receive they are still in git's quarantine directory).
fn forge_hook(repo: &Path, name: &str) {
    let log = repo.join(format!("forge-{name}.log"));
    let script = format!(
        "#!/bin/sh\nwhile read old new ref; do\n  echo \"$old $new $ref\" >> '{}'\n  \
         [ \"$new\" = 0000000000000000000000000000000000000000 ] || git cat-file -e \"$new\" || \
         {{ echo \"forge: $new unreadable\" >&2; exit 1; }}\ndone\n",
        log.display()
    );
    let path = repo.join("hooks").join(name);
    std::fs::write(&path, script).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
}

fn forge_log(repo: &Path, name: &str) -> String {
    std::fs::read_to_string(repo.join(format!("forge-{name}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn git_daemon_pushes_are_decided_by_the_node_and_release_held_events() {
    let mut node = Node::start().await;
    let daemon = GitDaemon::start(&node.root());
    node.announce().await;
    let repo = node.repo();
    forge_hook(&repo, "pre-receive");
    forge_hook(&repo, "post-receive");

    let root = node.root().display().to_string();
    let (ok, out) = grasp_hook(&["install", &root, "--socket", &node.socket()]);
    assert!(ok, "{out}");
    assert!(out.contains("pre-receive: chained") && out.contains("1 repositories"), "{out}");
    // installing again changes nothing and never chains our own hook
    let (ok, again) = grasp_hook(&["install", &root, "--socket", &node.socket()]);
    assert!(ok && again.contains("pre-receive: updated"), "{again}");
    let chained = std::fs::read_to_string(repo.join("hooks/pre-receive.grasp-chained")).unwrap();
    assert!(chained.contains("forge-pre-receive.log"), "the forge's hook is kept: {chained}");

    let url = daemon.url(&repo);
    let work = Workdir::new();
    let c1 = work.commit("README", b"hello");

    // no state yet: refused with the reason, and the forge's hook never ran
    let out = work.fails(&["push", &url, "main"]);
    rejected(&out, "no state event");
    assert!(forge_log(&repo, "pre-receive").is_empty());

    // a held state authorizes the push; post-receive releases it and the announcement
    let base = Timestamp::now().as_secs();
    let s1 = node.state(&[("refs/heads/main", &c1)], base).await;
    let out = grasp_tests::git::git(work.path(), &["push", &url, "main"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("grasp: released 2 held event(s)"),
        "post-receive reports the release:\n{stderr}"
    );
    node.served(s1.id).await;
    assert_eq!(bare_refs(&repo).0, vec![("refs/heads/main".to_owned(), c1.clone())]);
    let announcements =
        fetch(&node.client, Filter::new().kind(Kind::Custom(30617)).author(node.owner.public_key())).await;
    assert_eq!(announcements.len(), 1, "the announcement was released with the state");
    // both forge hooks saw the same input as ours (stdin preserved), objects readable
    assert!(forge_log(&repo, "pre-receive").contains(&format!("{c1} refs/heads/main")));
    assert!(forge_log(&repo, "post-receive").contains(&format!("{c1} refs/heads/main")));

    // a push that does not match the latest state
    let c2 = work.commit("README", b"changed");
    let out = work.fails(&["push", &url, "main"]);
    rejected(&out, "refs/heads/main would be at");
    assert!(out.contains(&c2[..7]) && out.contains(&c1[..7]), "{out}");

    // refs/nostr/<id>: shape, the PR's 'c' commit, no deletion
    let out = work.fails(&["push", &url, "main:refs/nostr/xyz"]);
    rejected(&out, "64-character");
    let pr_work = Workdir::clone_from(&url, &[]);
    let pr_commit = pr_work.commit("feature", b"a change");
    let clone_url = node.server.clone_url(&node.owner.public_key(), D);
    let pr = events::pull_request(
        &Keys::generate(),
        &coordinate(&node.owner.public_key(), D),
        &pr_commit,
        &clone_url,
    );
    publish(&node.client, &pr).await.expect("PR held");
    let pr_ref = format!("refs/nostr/{}", pr.id.to_hex());
    let out = work.fails(&["push", &url, &format!("{c2}:{pr_ref}")]);
    rejected(&out, "'c' tag");
    pr_work.ok(&["push", &url, &format!("HEAD:{pr_ref}")]);
    node.served(pr.id).await;
    let out = work.fails(&["push", &url, &format!(":{pr_ref}")]);
    rejected(&out, "cannot be deleted");

    // the node is down: pushes are refused with a clear message (fail closed)
    let c3 = work.commit("README", b"while the node is down");
    node.state(&[("refs/heads/main", &c3)], base + 1).await;
    node.server.stop();
    let out = work.fails(&["push", &url, "main"]);
    rejected(&out, "cannot reach the GRASP node");
    assert!(out.contains("Pushes are refused until the node answers"), "{out}");
    assert_eq!(bare_refs(&repo).0, vec![("refs/heads/main".to_owned(), c1), (pr_ref, pr_commit)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn git_http_backend_pushes_are_decided_by_the_node() {
    let mut node = Node::start().await;
    let backend = HttpBackend::start(&node.root()).await;
    node.announce().await;
    let repo = node.repo();
    // one repository: its root is derived from the <root>/<npub>/<id>.git layout
    let (ok, out) = grasp_hook(&["install", &repo.display().to_string(), "--socket", &node.socket()]);
    assert!(ok && out.contains("pre-receive: new"), "{out}");

    let url = backend.url(&repo);
    let work = Workdir::new();
    let c1 = work.commit("README", b"over http-backend");
    let out = work.fails(&["push", &url, "main"]);
    rejected(&out, "no state event");

    let s1 = node.state(&[("refs/heads/main", &c1)], Timestamp::now().as_secs()).await;
    work.ok(&["push", &url, "main"]);
    node.served(s1.id).await;
    let clone = Workdir::clone_from(&url, &[]);
    assert_eq!(clone.rev("HEAD"), c1);

    let out = work.fails(&["push", &url, "main:refs/heads/other"]);
    rejected(&out, "refs/heads/other is not in the state");

    node.server.stop();
    let c2 = work.commit("README", b"later");
    let out = work.fails(&["push", &url, &format!("{c2}:refs/heads/main")]);
    rejected(&out, "cannot reach the GRASP node");
}

#[tokio::test(flavor = "multi_thread")]
async fn forge_layouts_name_the_repository_and_must_be_the_nodes_directory() {
    let node = Node::start().await;
    node.announce().await;
    // The forge serves its own tree; its repository is a link to the node's.
    let forge = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(forge.path().join("alice")).unwrap();
    let linked = forge.path().join("alice/project.git");
    std::os::unix::fs::symlink(node.repo(), &linked).unwrap();
    // and one that is not the node's at all
    let stranger = forge.path().join("alice/other.git");
    grasp_tests::git::git_ok(forge.path(), &["init", "-q", "--bare", &stranger.display().to_string()]);
    let daemon = GitDaemon::start(forge.path());
    let npub = node.owner.public_key().to_bech32().unwrap();
    for repo in [&linked, &stranger] {
        let (ok, out) = grasp_hook(&[
            "install",
            &repo.display().to_string(),
            "--socket",
            &node.socket(),
            "--owner",
            &npub,
            "--identifier",
            D,
        ]);
        assert!(ok, "{out}");
    }

    let work = Workdir::new();
    let c1 = work.commit("README", b"forge");
    node.state(&[("refs/heads/main", &c1)], Timestamp::now().as_secs()).await;
    let out = work.fails(&["push", &daemon.url(&stranger), "main"]);
    rejected(&out, "is not the node's repository");
    work.ok(&["push", &daemon.url(&linked), "main"]);
    assert_eq!(bare_refs(&node.repo()).0, vec![("refs/heads/main".to_owned(), c1)]);
}

#[test]
fn a_shared_hooks_directory_serves_repositories_created_later() {
    // No node runs: the shared hooks must still be the ones git uses, and refuse.
    let dir = tempfile::tempdir().unwrap();
    let (root, hooks) = (dir.path().join("repos"), dir.path().join("hooks"));
    let socket = dir.path().join("node.sock").display().to_string();
    std::fs::create_dir_all(&root).unwrap();
    let (hooks_arg, root_arg) = (hooks.display().to_string(), root.display().to_string());
    let (ok, out) =
        grasp_hook(&["install", "--hooks-dir", &hooks_arg, "--root", &root_arg, "--socket", &socket]);
    assert!(ok && out.contains("pre-receive: new") && out.contains("post-receive: new"), "{out}");
    // A repository created afterwards, pointed at the shared directory (as core.hooksPath
    // in the git server user's config would do for all of them).
    let npub = Keys::generate().public_key().to_bech32().unwrap();
    let repo = root.join(&npub).join("later.git");
    grasp_tests::git::git_ok(dir.path(), &["init", "-q", "--bare", &repo.display().to_string()]);
    grasp_tests::git::git_ok(&repo, &["config", "core.hooksPath", &hooks.display().to_string()]);
    // install on the root finds the shared directory through git and rewrites it once
    let (ok, out) = grasp_hook(&["install", &root.display().to_string(), "--socket", &socket]);
    assert!(
        ok && out.contains(&hooks.display().to_string()) && out.contains("pre-receive: updated"),
        "{out}"
    );
    assert!(!repo.join("hooks/pre-receive").exists(), "nothing written into the repository's own hooks");

    let work = Workdir::new();
    work.commit("README", b"x");
    let out = work.fails(&["push", &repo.display().to_string(), "main"]);
    rejected(&out, "cannot reach the GRASP node");
}
