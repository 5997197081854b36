//! A browser git client against the server, in a real browser: Debian's chromium runs a page
//! served from another origin that clones with isomorphic-git over CORS, publishes a state
//! event and receives it over the relay websocket, pushes, and reads a refused push's
//! reason. Skipped (with the reason printed) only where chromium cannot run at all.

use std::time::Duration;

use grasp_tests::git::bare_refs;
use grasp_tests::{browser, host_repository, hostile, TestServer};
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
    let hostile = hostile::host(&server, &client).await;
    let repo_page = server.clone_url(&owner.public_key(), d);

    let options = json!({
        "chromium": chromium,
        "server": server.http_url(),
        "params": {
            "npub": owner.public_key().to_bech32().unwrap(),
            "d": d,
            "sk": owner.secret_key().to_secret_hex(),
            "after": signed_at.to_string(),
        },
        "pages": [repo_page, hostile.url],
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

    // The repository pages render in the browser, from the server's own origin.
    let pages = out["pages"].as_array().unwrap();
    for page in pages {
        assert_eq!(page["status"], 200, "{page:#}");
        assert_clean(page["url"].as_str().unwrap(), page);
        assert_eq!(page["injected"], false, "no script from events ran");
        let links = strings(&page["links"]);
        assert!(links.iter().any(|l| l.starts_with("https://gitworkshop.dev/naddr1")), "{links:?}");
        assert!(links.iter().any(|l| l.starts_with("nostr:naddr1")), "{links:?}");
        assert!(!links.iter().any(|l| l.starts_with("javascript:")), "{links:?}");
        let text = page["text"].as_str().unwrap();
        for heading in ["Clone", "Maintainers", "Latest state", "Branches", "Tags", "Waiting in purgatory"] {
            assert!(text.contains(heading), "{heading} missing from:\n{text}");
        }
    }
    let text = pages[0]["text"].as_str().unwrap();
    assert!(text.contains(&format!("git clone {repo_page}")), "{text}");
    assert!(text.contains(&owner.public_key().to_bech32().unwrap()));
    assert!(text.contains(pushed), "the page shows the state the browser pushed:\n{text}");
    // Markup from events is shown as the text it is.
    assert_eq!(pages[1]["title"], hostile::NAME);
    let text = pages[1]["text"].as_str().unwrap();
    for shown in
        [hostile::DESCRIPTION, hostile::BRANCH, hostile::TAG, hostile::SCRIPT_URL, hostile::HELD_BRANCH]
    {
        assert!(text.contains(shown), "{shown} is not shown as text:\n{text}");
    }
}
