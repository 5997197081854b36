//! A browser git client against the server, in a real browser: Debian's chromium runs a page
//! served from another origin that clones with isomorphic-git over CORS, publishes a state
//! event and receives it over the relay websocket, pushes, and reads a refused push's
//! reason. Skipped (with the reason printed) only where chromium cannot run at all.

use std::time::Duration;

use grasp_tests::git::bare_refs;
use grasp_tests::{browser, host_repository, TestServer};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().map(|v| v.as_str().unwrap_or_default().to_owned()).collect()
}

/// Asserts a page logged no console errors, threw nothing, and had no failed request.
fn assert_clean(what: &str, page: &Value) {
    for field in ["console_errors", "page_errors", "failed_requests"] {
        assert!(strings(&page[field]).is_empty(), "{what}: {field}: {:#}", page[field]);
    }
}

#[tokio::test]
async fn a_browser_client_clones_publishes_pushes_and_sees_a_refusal() {
    let chromium = match browser::chromium() {
        Ok(path) => path,
        Err(why) => {
            eprintln!("SKIPPED a_browser_client_clones_publishes_pushes_and_sees_a_refusal: {why}");
            return;
        }
    };
    let server = TestServer::start();
    let client = server.client().await;
    let owner = Keys::generate();
    let d = "in-a-browser";
    host_repository(&server, &client, &owner, d, &[]).await;
    let signed_at = Timestamp::now().as_secs();
    let path = server.repo_path(&owner.public_key(), d);
    let hosted = bare_refs(&path).0[0].1.clone();

    let options = json!({
        "chromium": chromium,
        "server": server.http_url(),
        "params": {
            "npub": owner.public_key().to_bech32().unwrap(),
            "d": d,
            "sk": owner.secret_key().to_secret_hex(),
            "after": signed_at.to_string(),
        },
        "timeout_ms": 120_000,
    });
    let out =
        tokio::task::spawn_blocking(move || browser::run(&options, Duration::from_secs(180))).await.unwrap();
    println!("browser run: {out:#}");
    assert!(out["error"].is_null(), "the driver failed: {}", out["error"]);
    let page = &out["client"];
    assert!(page["error"].is_null(), "the client page failed after {:?}: {}", page["steps"], page["error"]);
    assert_ne!(out["origin"].as_str().unwrap(), server.http_url(), "the page comes from another origin");

    assert_eq!(page["clone"]["head"], hosted.as_str(), "isomorphic-git cloned the hosted commit");
    assert_eq!(page["clone"]["readme"], d);
    assert_eq!(
        page["publish"]["message"], "purgatory: won't be served until git data arrives",
        "the state waits for its commit"
    );
    assert_eq!(page["push"]["ok"], true, "{:#}", page["push"]);
    let pushed = page["push"]["oid"].as_str().unwrap();
    assert_eq!(bare_refs(&path).0, vec![("refs/heads/main".to_owned(), pushed.to_owned())]);
    assert_eq!(page["live"]["id"], page["publish"]["id"], "the released state arrived over the websocket");
    let refused = &page["rejected"];
    assert_eq!(refused["pushed"], false, "{refused:#}");
    let reason = refused["message"].as_str().unwrap();
    assert!(reason.contains("rejected by GRASP"), "the browser sees why: {reason}");
    assert_eq!(bare_refs(&path).0[0].1, pushed, "the refused commit did not land");
    assert_clean("client page", page);
}
