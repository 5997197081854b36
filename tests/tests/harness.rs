//! What ngit 3's own test harness expects of a server it starts: the whole service under a
//! base path, an inherited listening socket, and the relay's own identity (kind 0, kind
//! 10002, NIP-05).

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use grasp_tests::events::{self, state_at};
use grasp_tests::git::Workdir;
use grasp_tests::http::request;
use grasp_tests::server::binary;
use grasp_tests::{fetch, frontend_tests, publish, Frontend, RawClient, TestServer};
use nostr_sdk::prelude::*;

const BASE: &str = "/services/grasp";
const D: &str = "repo";

async fn client_at(url: &str) -> Client {
    let client = Client::new(Keys::generate());
    client.add_relay(url).await.expect("add relay");
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(10)).await;
    client
}

async fn the_whole_service_lives_under_the_base_path(frontend: Frontend) {
    let server = frontend.builder().arg(format!("--base-path={BASE}")).start();
    let addr = server.addr.clone();
    // Readiness as the harness checks it, and nothing outside the mount.
    assert_eq!(request(&addr, "GET", BASE, &[], b"").await.status, 200);
    assert_eq!(request(&addr, "GET", &format!("{BASE}/"), &[], b"").await.status, 200);
    for outside in ["/", "/metrics", "/services/graspy", "/.well-known/nostr.json"] {
        assert_eq!(request(&addr, "GET", outside, &[], b"").await.status, 404, "{outside}");
    }
    let nip11 = request(&addr, "GET", BASE, &[("Accept", "application/nostr+json")], b"").await;
    assert_eq!(nip11.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&nip11.body).expect("NIP-11 JSON");
    assert!(doc["supported_grasps"].as_array().is_some_and(|g| !g.is_empty()), "{doc}");
    assert_eq!(request(&addr, "GET", &format!("{BASE}/metrics"), &[], b"").await.status, 200);
    // No relay at the root of the domain.
    assert!(RawClient::try_connect_with_headers(&format!("ws://{addr}/"), &[]).await.is_err());

    // An announcement names the mounted URLs; git works under them, /prs/ too.
    let relay = format!("ws://{addr}{BASE}");
    let client = client_at(&relay).await;
    let owner = Keys::generate();
    let npub = owner.public_key().to_bech32().unwrap();
    let url = format!("http://{addr}{BASE}/{npub}/{D}.git");
    let root_listing = events::announcement(&owner, D, &addr, &[]);
    let refused = publish(&client, &root_listing).await.expect_err("root URLs do not list a mounted service");
    assert!(refused.contains(BASE), "the refusal names the mount: {refused}");
    let announcement = events::announcement_with(&owner, D, &[url.clone()], &[relay.clone()], &[]);
    publish(&client, &announcement).await.expect("announcement naming the mount");
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    publish(&client, &state_at(&owner, D, &[("refs/heads/main", &c1)], Some("main"), Timestamp::now()))
        .await
        .unwrap();
    work.ok(&["push", &url, "main"]);
    assert_eq!(Workdir::clone_from(&url, &[]).rev("HEAD"), c1);
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("git clone {url}")), "{page}");

    let contributor = Keys::generate();
    let prs = format!("http://{addr}{BASE}/prs/{}/{D}.git", contributor.public_key().to_bech32().unwrap());
    let placeholder = EventId::from_byte_array([5; 32]);
    work.ok(&["push", &prs, &format!("main:refs/nostr/{}", placeholder.to_hex())]);
    assert!(
        server.prs_path(&contributor.public_key(), D).join("HEAD").is_file(),
        "on disk under the hex pubkey"
    );
}

fn probe() -> std::process::Output {
    Command::new(binary("grasp-server")).arg("--internal-test-listener-support").output().expect("run")
}

#[test]
fn the_listener_probe_answers_exactly() {
    let out = probe();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"ngit-test-listener-v1\n");
}

#[tokio::test]
async fn a_server_serves_on_an_inherited_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The child inherits it, as the harness arranges.
    nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
    let fd = listener.as_raw_fd().to_string();
    let server = TestServer::builder()
        .env("NGIT_TEST_LISTENER_FD", &fd)
        .env("NGIT_DOMAIN", format!("127.0.0.1:{port}"))
        .start();
    drop(listener);
    assert_eq!(server.addr, format!("127.0.0.1:{port}"), "it serves the inherited socket");
    assert!(server.nip11().await["supported_grasps"].is_array());

    // Outside test mode the variable is refused with a reason.
    let relay = tempfile::tempdir().unwrap();
    let out = Command::new(binary("grasp-server"))
        .env("NGIT_TEST_LISTENER_FD", "7")
        .arg("--bind-address=127.0.0.1:0")
        .arg(format!("--relay-data-path={}", relay.path().display()))
        .arg(format!("--git-data-path={}", relay.path().join("git").display()))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only in test mode"), "{out:?}");
}

async fn the_relay_publishes_its_own_identity(frontend: Frontend) {
    let owner = Keys::generate();
    let server = frontend
        .builder()
        .arg(format!("--relay-owner-nsec={}", owner.secret_key().to_bech32().unwrap()))
        .start();
    let client = server.client().await;
    let hex = owner.public_key().to_hex();
    let profile = fetch(&client, Filter::new().author(owner.public_key()).kind(Kind::Metadata)).await;
    let profile: serde_json::Value = serde_json::from_str(&profile.first().expect("kind 0").content).unwrap();
    assert_eq!(profile["bot"], true);
    assert_eq!(profile["nip05"], format!("_@{}", server.addr));
    let relays = fetch(&client, Filter::new().author(owner.public_key()).kind(Kind::RelayList)).await;
    let tag = relays.first().expect("kind 10002").tags.first().unwrap().as_slice().to_vec();
    assert_eq!(tag, vec!["r".to_owned(), server.ws_url()]);
    let nip05 = request(&server.addr, "GET", "/.well-known/nostr.json", &[], b"").await;
    assert_eq!(nip05.status, 200);
    assert!(nip05.header("access-control-allow-origin").is_some(), "NIP-05 needs CORS");
    let doc: serde_json::Value = serde_json::from_slice(&nip05.body).unwrap();
    assert_eq!(doc["names"]["_"], hex);

    let anonymous = frontend.start();
    assert_eq!(request(&anonymous.addr, "GET", "/.well-known/nostr.json", &[], b"").await.status, 404);
}

frontend_tests!(the_whole_service_lives_under_the_base_path, the_relay_publishes_its_own_identity);
