//! GRASP-08 private service from outside: websocket clients (anonymous, non-members,
//! members) over NIP-42, the real git CLI with a credential helper that hands over a NIP-98
//! credential as its Basic password, the identical 401s everyone else gets, mirroring
//! between two private servers, and the configurations that must not start.

use std::time::Duration;

use base64::Engine as _;
use grasp_tests::git::Workdir;
use grasp_tests::sync::{addr, free_port, PATIENCE};
use grasp_tests::{events, frontend_tests, wait_until, Frontend, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};

const D: &str = "secret";

fn private(frontend: Frontend, members: &[&Keys]) -> grasp_tests::server::TestServerBuilder {
    let npubs: Vec<String> = members.iter().map(|k| k.public_key().to_bech32().unwrap()).collect();
    frontend.builder().arg("--private-mode").arg(format!("--private-members={}", npubs.join(",")))
}

/// Connects and reads the challenge the relay sends first.
async fn connect(server: &TestServer) -> (RawClient, String) {
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let first = raw.recv().await;
    assert_eq!(first[0], "AUTH", "a private relay speaks first: {first}");
    let challenge = first[1].as_str().expect("challenge").to_owned();
    (raw, challenge)
}

/// Answers the challenge as `keys`; returns the `OK` reply.
async fn authenticate(server: &TestServer, raw: &mut RawClient, challenge: &str, keys: &Keys) -> Value {
    let auth = EventBuilder::auth(challenge, RelayUrl::parse(&server.ws_url()).unwrap())
        .sign_with_keys(keys)
        .unwrap();
    raw.send(json!(["AUTH", events::json(&auth)])).await;
    raw.recv().await
}

/// A connection authenticated as the member `keys`.
async fn member_connection(server: &TestServer, keys: &Keys) -> RawClient {
    let (mut raw, challenge) = connect(server).await;
    let ok = authenticate(server, &mut raw, &challenge, keys).await;
    assert_eq!(ok[2], true, "the member is let in: {ok}");
    raw
}

/// True when the server closed the connection (nothing but a close within 5 s).
async fn closed(raw: &mut RawClient) -> bool {
    raw.try_recv(Duration::from_secs(5)).await.is_none()
}

/// `Nostr`-less base64 of a NIP-98 credential signed by `keys` for `url`, `age` seconds old.
fn credential(keys: &Keys, url: &str, age: i64) -> String {
    let at = Timestamp::from((Timestamp::now().as_secs() as i64 - age) as u64);
    let tags = [Tag::parse(["u", url]).unwrap(), Tag::parse(["method", "GET"]).unwrap()];
    let event =
        EventBuilder::new(Kind::HttpAuth, "").tags(tags).custom_created_at(at).sign_with_keys(keys).unwrap();
    base64::engine::general_purpose::STANDARD.encode(event.as_json())
}

/// git, with a credential helper that answers with `token` as the password.
fn git_with_token(token: &str) -> Vec<String> {
    vec!["-c".into(), format!("credential.helper=!f() {{ echo username=nostr; echo password={token}; }}; f")]
}

async fn anonymous_and_non_members_get_nothing(frontend: Frontend) {
    let member = Keys::generate();
    let server = private(frontend, &[&member]).start();
    let (mut raw, _) = connect(&server).await;
    let note = EventBuilder::text_note("hi").sign_with_keys(&member).unwrap();
    raw.send(json!(["EVENT", events::json(&note)])).await;
    let ok = raw.recv().await;
    assert_eq!((ok[0].as_str(), ok[2].as_bool()), (Some("OK"), Some(false)), "{ok}");
    assert!(ok[3].as_str().unwrap().starts_with("auth-required:"), "{ok}");
    for (message, kind) in [
        (json!(["REQ", "r", {"kinds": [1]}]), "CLOSED"),
        (json!(["COUNT", "c", {"kinds": [1]}]), "CLOSED"),
        (json!(["NEG-OPEN", "n", {"kinds": [1]}, "61"]), "NEG-ERR"),
        (json!(["CLOSE", "r"]), "NOTICE"),
    ] {
        raw.send(message.clone()).await;
        let reply = raw.recv().await;
        assert_eq!(reply[0], kind, "{message} → {reply}");
        let reason = reply.as_array().unwrap().last().unwrap().as_str().unwrap();
        assert!(reason.starts_with("auth-required:"), "{message} → {reply}");
    }
    // A valid answer from someone else: restricted, and the connection ends.
    let (mut raw, challenge) = connect(&server).await;
    let refused = authenticate(&server, &mut raw, &challenge, &Keys::generate()).await;
    assert_eq!(refused[2], false, "{refused}");
    assert!(refused[3].as_str().unwrap().starts_with("restricted:"), "{refused}");
    assert!(closed(&mut raw).await, "a non-member is disconnected");
    // Three wrong answers (another challenge) end the connection too.
    let (mut raw, _) = connect(&server).await;
    for attempt in 1..=3 {
        let reply = authenticate(&server, &mut raw, "not-the-challenge", &member).await;
        assert!(reply[3].as_str().unwrap().starts_with("auth-required:"), "attempt {attempt}: {reply}");
    }
    assert!(closed(&mut raw).await, "three failed answers end the connection");
    // The public surface stays: NIP-11 says what this is; /metrics is not public.
    let nip11 = server.nip11().await;
    assert!(nip11["supported_grasps"].as_array().unwrap().contains(&json!("GRASP-08")), "{nip11}");
    for nip in [42, 98] {
        assert!(nip11["supported_nips"].as_array().unwrap().contains(&json!(nip)), "{nip11}");
    }
    assert_eq!(nip11["limitation"]["auth_required"], true);
    assert!(!nip11["supported_grasps"].as_array().unwrap().contains(&json!("GRASP-06")), "GRASP-06 is off");
    let metrics = reqwest::get(format!("{}/metrics", server.http_url())).await.unwrap();
    assert_eq!(metrics.status().as_u16(), 404);
}

async fn a_member_reads_publishes_clones_and_pushes(frontend: Frontend) {
    let member = Keys::generate();
    let server = private(frontend, &[&member]).start();
    let mut raw = member_connection(&server, &member).await;
    // The member announces a repository and publishes its state; both are served to them.
    let announcement = events::announcement(&member, D, &addr_of(&server), &[]);
    assert!(raw.publish(&events::json(&announcement)).await.0);
    let work = Workdir::new();
    let commit = work.commit("README", b"private");
    let state = events::state(&member, D, &[("refs/heads/main", &commit)], Some("main"));
    assert!(raw.publish(&events::json(&state)).await.0);
    let url = server.clone_url(&member.public_key(), D);
    // git with a credential helper: the NIP-98 credential goes as the Basic password.
    let mut push = git_with_token(&credential(&member, &url, 0));
    push.extend(["push".into(), url.clone(), "main".into()]);
    work.ok(&push.iter().map(String::as_str).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let mut clone = git_with_token(&credential(&member, &url, 0));
    clone.extend(["clone".into(), "-q".into(), url.clone(), ".".into()]);
    grasp_tests::git::git_ok(dir.path(), &clone.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(grasp_tests::git::git_ok(dir.path(), &["rev-parse", "HEAD"]), commit);
    let served =
        raw.req("s", &[json!({"kinds": [30617, 30618], "authors": [member.public_key().to_hex()]})]).await;
    assert_eq!(served.unwrap().len(), 2);
    // The same credential as `Authorization: Nostr` (what ngit sends) works too.
    let info = format!("{url}/info/refs?service=git-upload-pack");
    let ok = reqwest::Client::new()
        .get(&info)
        .header("Authorization", format!("Nostr {}", credential(&member, &url, 0)))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
}

/// Status, headers (sorted) and body of an answer.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// What a 401 looks like, minus the date.
async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        // The date, and whether the connection stays open (a refused POST's unread body
        // closes it), say nothing about the refusal.
        .filter(|(name, _)| *name != "date" && *name != "connection")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

async fn everyone_else_gets_the_same_empty_401(frontend: Frontend) {
    let member = Keys::generate();
    let stranger = Keys::generate();
    let server = private(frontend, &[&member]).start();
    let mut raw = member_connection(&server, &member).await;
    let announcement = events::announcement(&member, D, &addr_of(&server), &[]);
    assert!(raw.publish(&events::json(&announcement)).await.0);
    let url = server.clone_url(&member.public_key(), D);
    let missing = server.clone_url(&member.public_key(), "no-such-repository");
    let http = reqwest::Client::new();
    let info = |u: &str| format!("{u}/info/refs?service=git-upload-pack");
    let nostr = |token: String| format!("Nostr {token}");
    let cases = [
        ("no credential", http.get(info(&url))),
        ("a non-member", http.get(info(&url)).header("Authorization", nostr(credential(&stranger, &url, 0)))),
        ("expired", http.get(info(&url)).header("Authorization", nostr(credential(&member, &url, 300)))),
        (
            "another repository's u",
            http.get(info(&url)).header("Authorization", nostr(credential(&member, &missing, 0))),
        ),
        (
            "the info/refs URL as u",
            http.get(info(&url)).header("Authorization", nostr(credential(&member, &info(&url), 0))),
        ),
        ("a repository that does not exist", http.get(info(&missing))),
        (
            "a stranger on a missing repository",
            http.get(info(&missing)).header("Authorization", nostr(credential(&stranger, &missing, 0))),
        ),
        ("a push", http.post(format!("{url}/git-receive-pack")).body("0000")),
        ("the repository page", http.get(&url)),
    ];
    let mut first: Option<Answer> = None;
    for (what, request) in cases {
        let got = answer(request).await;
        assert_eq!(got.0, 401, "{what}: {got:?}");
        assert!(got.2.is_empty(), "{what}: an empty body");
        assert!(
            got.1.iter().any(|(n, v)| n == "www-authenticate"
                && v.starts_with("Nostr realm=")
                && v.contains("method=\"GET\"")),
            "{what}: {got:?}"
        );
        match &first {
            None => first = Some(got),
            Some(first) => assert_eq!(&got, first, "{what} looks like every other refusal"),
        }
    }
    // git without a credential is refused too, and learns nothing.
    let dir = tempfile::tempdir().unwrap();
    let out = grasp_tests::git::git_fails(dir.path(), &["clone", "-q", &url, "."]);
    assert!(out.contains("could not read Username") || out.contains("Authentication failed"), "{out}");
}

fn addr_of(server: &TestServer) -> String {
    server.http_url().trim_start_matches("http://").to_owned()
}

frontend_tests!(
    anonymous_and_non_members_get_nothing,
    a_member_reads_publishes_clones_and_pushes,
    everyone_else_gets_the_same_empty_401,
);

/// Two private servers: A's member announces a repository on both. A learns from B's NIP-11
/// that B is a private server and makes B's owner a member; B then syncs the repository's
/// events from A (answering A's NIP-42 challenge) and fetches its git data with a NIP-98
/// credential.
#[tokio::test]
async fn two_private_servers_that_a_repository_names_mirror_each_other() {
    let member = Keys::generate();
    let (b_owner, a_owner) = (Keys::generate(), Keys::generate());
    let (a_port, b_port) = (free_port(), free_port());
    let nsec = |k: &Keys| format!("--relay-owner-nsec={}", k.secret_key().to_secret_hex());
    let a = private(Frontend::Inline, &[&member])
        .arg(format!("--bind-address={}", addr(a_port)))
        .arg(nsec(&a_owner))
        .start();
    let b = private(Frontend::Inline, &[&member])
        .arg(format!("--bind-address={}", addr(b_port)))
        .arg(nsec(&b_owner))
        .arg("--sync=true")
        .start();
    // Before any announcement names B, B's owner is a stranger to A.
    let (mut raw, challenge) = connect(&a).await;
    let refused = authenticate(&a, &mut raw, &challenge, &b_owner).await;
    assert_eq!(refused[2], false, "{refused}");

    let npub = member.public_key().to_bech32().unwrap();
    let clone: Vec<String> =
        [a_port, b_port].iter().map(|p| format!("http://{}/{npub}/{D}.git", addr(*p))).collect();
    let relays: Vec<String> = [a_port, b_port].iter().map(|p| format!("ws://{}", addr(*p))).collect();
    let announcement = events::announcement_with(&member, D, &clone, &relays, &[]);
    let work = Workdir::new();
    let commit = work.commit("README", b"mirrored");
    let state = events::state(&member, D, &[("refs/heads/main", &commit)], Some("main"));
    let mut on_a = member_connection(&a, &member).await;
    assert!(on_a.publish(&events::json(&announcement)).await.0);
    assert!(on_a.publish(&events::json(&state)).await.0);
    let mut push = git_with_token(&credential(&member, &clone[0], 0));
    push.extend(["push".into(), clone[0].clone(), "main".into()]);
    work.ok(&push.iter().map(String::as_str).collect::<Vec<_>>());
    // B gets the events, not the data: it holds them and must fetch the data from A.
    let mut on_b = member_connection(&b, &member).await;
    assert!(on_b.publish(&events::json(&announcement)).await.0);
    assert!(on_b.publish(&events::json(&state)).await.0);

    // A asks B who it is and lets B's owner in.
    wait_until("A lets B's owner in", PATIENCE, || async {
        let (mut raw, challenge) = connect(&a).await;
        (authenticate(&a, &mut raw, &challenge, &b_owner).await[2] == true).then_some(())
    })
    .await;
    // B fetches the git data from A with its owner's NIP-98 credential: its repository
    // follows the state.
    wait_until("B has the commit from A", PATIENCE, || async {
        let path = b.repo_path(&member.public_key(), D);
        if !path.exists() {
            return None;
        }
        let out = grasp_tests::git::git(&path, &["rev-parse", "--verify", "-q", "refs/heads/main"]);
        (String::from_utf8_lossy(&out.stdout).trim() == commit).then_some(())
    })
    .await;
    // Then B syncs from A, answering A's NIP-42 challenge: an issue published to A only
    // reaches B.
    let issue = events::issue(&member, &events::coordinate(&member.public_key(), D));
    assert!(on_a.publish(&events::json(&issue)).await.0);
    wait_until("B syncs the issue from A", PATIENCE, || async {
        let mut raw = member_connection(&b, &member).await;
        let got = raw.req("i", &[json!({"ids": [issue.id.to_hex()]})]).await.unwrap_or_default();
        (!got.is_empty()).then_some(())
    })
    .await;
}

#[test]
fn private_configurations_that_cannot_work_do_not_start() {
    let member = Keys::generate().public_key().to_bech32().unwrap();
    let members = format!("--private-members={member}");
    for (args, needle) in [
        (vec!["--private-mode"], "private_members"),
        (vec!["--private-mode", members.as_str(), "--prs-hosting=true"], "prs_hosting"),
        (vec![members.as_str()], "private_mode"),
        (vec!["--private-mode", "--private-members=npub1nothing"], "npub1nothing"),
        (
            vec!["--private-mode", members.as_str(), "--private-public-origin=https://x.example/path"],
            "private_public_origin",
        ),
    ] {
        for binary in ["grasp-server", "grasp-proxy"] {
            let mut all = args.clone();
            if binary == "grasp-proxy" {
                all.push("--upstream=http://127.0.0.1:1");
            }
            let out = std::process::Command::new(grasp_tests::server::binary(binary))
                .args(&all)
                .env_remove("GRASP_LOG_LEVEL")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{binary} {all:?}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
            assert!(stderr.contains(needle), "{binary} {all:?}: {stderr}");
        }
    }
}

/// ngit-grasp's environment names configure a private server, and private mode alone turns
/// GRASP-06 off instead of refusing to start.
#[tokio::test]
async fn ngit_grasp_names_make_a_private_server() {
    let member = Keys::generate();
    let server = TestServer::builder()
        .env("NGIT_PRIVATE_MODE", "true")
        .env("NGIT_PRIVATE_MEMBERS", member.public_key().to_bech32().unwrap())
        .env("NGIT_PRIVATE_PUBLIC_ORIGIN", "http://git.example.com")
        .start();
    let nip11 = server.nip11().await;
    assert_eq!(nip11["supported_grasps"], json!(["GRASP-01", "GRASP-08"]), "{nip11}");
    let (_, challenge) = connect(&server).await;
    assert!(!challenge.is_empty());
    // Credentials name the public origin, not the bound address.
    let mut raw = member_connection(&server, &member).await;
    let announcement = events::announcement(&member, D, &addr_of(&server), &[]);
    assert!(raw.publish(&events::json(&announcement)).await.0);
    let url = server.clone_url(&member.public_key(), D);
    let public = format!("http://git.example.com/{}/{D}.git", member.public_key().to_bech32().unwrap());
    let info = format!("{url}/info/refs?service=git-upload-pack");
    let http = reqwest::Client::new();
    let status = |token: String| {
        let request = http.get(&info).header("Authorization", format!("Nostr {token}"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(credential(&member, &public, 0)).await, 200);
    assert_eq!(status(credential(&member, &url, 0)).await, 401);
}
