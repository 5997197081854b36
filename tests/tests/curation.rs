//! Curation, black-box: the operator's allow / deny lists refuse events and pushes with
//! `blocked:` / `restricted:`, show in NIP-11, and change without a restart (file change or
//! SIGHUP).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use grasp_tests::events::{self, coordinate};
use grasp_tests::git::Workdir;
use grasp_tests::served::publish_to as publish;
use grasp_tests::server::binary;
use grasp_tests::{host_repository, wait_until, TestServer};
use nostr_sdk::prelude::*;

const HELD: &str = "purgatory: won't be served until git data arrives";

/// A curation file in its own temporary directory.
struct ListFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ListFile {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curation.toml");
        std::fs::write(&path, text).unwrap();
        Self { _dir: dir, path }
    }

    /// Replaces the file at once (write then rename), as an editor or config tool does.
    fn write(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn arg(&self) -> String {
        format!("--curation-file={}", self.path.display())
    }
}

fn npub(keys: &Keys) -> String {
    keys.public_key().to_bech32().unwrap()
}

/// Waits until publishing what `event` makes gets an answer `expected` likes.
async fn wait_for_answer(
    server: &TestServer,
    what: &str,
    event: impl Fn() -> Event,
    expected: impl Fn(bool, &str) -> bool,
) {
    wait_until(what, Duration::from_secs(30), || {
        let event = event();
        let expected = &expected;
        async move {
            let (ok, message) = publish(server, &event).await;
            expected(ok, &message).then_some(())
        }
    })
    .await;
}

fn blocked(ok: bool, message: &str) -> bool {
    !ok && message.starts_with("blocked:")
}

#[tokio::test]
async fn denied_keys_and_repositories_are_blocked_and_only_allowed_ones_hosted() {
    let (alice, bob, mallory) = (Keys::generate(), Keys::generate(), Keys::generate());
    let list = ListFile::new(&format!(
        "allow = [\"{}\", \"{}/chosen\"]\ndeny = [\"{}\", \"{}/secret\"]\n",
        npub(&alice),
        npub(&bob),
        npub(&mallory),
        npub(&alice)
    ));
    let server = TestServer::builder().arg(list.arg()).start();
    let addr = server.addr.clone();

    // allowed: alice's repositories, bob's "chosen"
    assert_eq!(
        publish(&server, &events::announcement(&alice, "tool", &addr, &[])).await,
        (true, HELD.to_owned())
    );
    assert_eq!(
        publish(&server, &events::announcement(&bob, "chosen", &addr, &[])).await,
        (true, HELD.to_owned())
    );
    // not allowed: restricted
    let (ok, message) = publish(&server, &events::announcement(&bob, "other", &addr, &[])).await;
    assert!(
        !ok && message.starts_with("restricted: this server only hosts repositories the operator allows"),
        "{message}"
    );
    // denied key: blocked, whatever it signs
    let (ok, message) = publish(&server, &events::announcement(&mallory, "tool", &addr, &[])).await;
    assert!(
        !ok && message.starts_with("blocked: events signed by this key are not accepted here"),
        "{message}"
    );
    // denied repository: blocked even for an allowed owner
    let (ok, message) = publish(&server, &events::announcement(&alice, "secret", &addr, &[])).await;
    assert!(!ok && message.starts_with("blocked: repository 'secret'"), "{message}");

    // related events: an allowed repository takes issues from anyone but the denied key
    let client = server.client().await;
    let repo = host_repository(&server, &client, &alice, "served", &[]).await;
    let anyone = Keys::generate();
    assert_eq!(publish(&server, &events::issue(&anyone, &repo)).await, (true, String::new()));
    let (ok, message) = publish(&server, &events::issue(&mallory, &repo)).await;
    assert!(!ok && message.starts_with("blocked:"), "{message}");
    let secret = coordinate(&alice.public_key(), "secret");
    let (ok, message) = publish(&server, &events::issue(&anyone, &secret)).await;
    assert!(!ok && message.starts_with("blocked: repository 'secret'"), "{message}");

    let nip11 = server.nip11().await;
    let curation = nip11["curation"].as_str().expect("curation present when curated");
    assert!(curation.contains("only allowed repositories are hosted"), "{curation}");
    assert!(!curation.contains(&npub(&mallory)), "the lists themselves are not published");
    let criteria = nip11["repo_acceptance_criteria"].as_str().unwrap();
    assert!(
        criteria.contains("allow list: 1 pubkey, 1 repository") && criteria.contains("deny list"),
        "{criteria}"
    );
}

#[tokio::test]
async fn lists_follow_file_changes_without_a_restart() {
    let list = ListFile::new("");
    let server = TestServer::builder().arg(list.arg()).start();
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let client = server.client().await;
    let repo = host_repository(&server, &client, &alice, "live", &[]).await;
    assert!(server.nip11().await.get("curation").is_none(), "nothing curated yet");
    assert_eq!(publish(&server, &events::issue(&bob, &repo)).await, (true, String::new()));

    // deny bob: noticed on its own
    list.write(&format!("deny = [\"{}\"]\n", npub(&bob)));
    wait_for_answer(&server, "bob is blocked after the file changed", || events::issue(&bob, &repo), blocked)
        .await;
    assert!(server.nip11().await["curation"].is_string());
    let out = Workdir::clone_from(&server.clone_url(&alice.public_key(), "live"), &[]);
    let c = out.commit("x", b"x");
    // pushes to a repository of a denied key are refused too
    list.write(&format!("deny = [\"{}\"]\n", npub(&alice)));
    wait_for_answer(&server, "alice is blocked", || events::issue(&alice, &repo), blocked).await;
    let refused =
        out.fails(&["push", &server.clone_url(&alice.public_key(), "live"), &format!("{c}:refs/heads/main")]);
    assert!(refused.contains("blocked:") && refused.contains("operator deny list"), "{refused}");

    // a broken file leaves the lists in force
    list.write("deny = [\"npub1broken\"]\n");
    wait_until("the broken file is reported", Duration::from_secs(30), || {
        let log = server.log();
        async move { log.contains("curation file not reloaded").then_some(()) }
    })
    .await;
    assert!(publish(&server, &events::issue(&alice, &repo)).await.1.starts_with("blocked:"));

    // emptied: everything is back, and NIP-11 drops the field
    list.write("");
    wait_for_answer(&server, "alice is accepted again", || events::issue(&alice, &repo), |ok, _| ok).await;
    assert!(server.nip11().await.get("curation").is_none());
}

#[tokio::test]
async fn sighup_reloads_at_once() {
    let list = ListFile::new("");
    // A reload interval far beyond the test: only the signal can bring the change in.
    let server = TestServer::builder().arg(list.arg()).arg("--curation-reload-secs=3600").start();
    let mallory = Keys::generate();
    let ann = || events::announcement(&mallory, "x", &server.addr, &[]);
    assert_eq!(publish(&server, &ann()).await, (true, HELD.to_owned()));
    list.write(&format!("deny = [\"{}\"]\n", npub(&mallory)));
    let status = Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    wait_for_answer(&server, "mallory is blocked after SIGHUP", ann, blocked).await;
    assert!(server.log().contains("curation lists reloaded"));
}

#[test]
fn an_unusable_file_stops_the_server_at_start() {
    let list = ListFile::new("deny = [\"npub1broken\"]\n");
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(binary("grasp-server"))
        .arg("--bind-address=127.0.0.1:0")
        .arg(format!("--git-data-path={}", data.path().join("repos").display()))
        .arg(format!("--relay-data-path={}", data.path().join("relay").display()))
        .arg(list.arg())
        .env_remove("GRASP_LOG_LEVEL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("curation_file") && stderr.contains("npub1broken"), "{stderr}");
}
