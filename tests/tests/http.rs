//! Plain HTTP behaviour of the listener: NIP-11, landing page, CORS, OPTIONS, metrics.

use grasp_tests::events;
use grasp_tests::{frontend_tests, publish, Frontend};
use nostr_sdk::prelude::*;
use reqwest::header::HeaderMap;

const ALLOWED_HEADERS: &[&str] =
    &["content-type", "git-protocol", "authorization", "accept", "content-encoding", "x-requested-with"];

fn assert_cors(headers: &HeaderMap, what: &str) {
    assert_eq!(headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("*"), "{what}");
    let methods = headers.get("access-control-allow-methods").expect(what).to_str().unwrap();
    for m in ["GET", "POST", "OPTIONS"] {
        assert!(methods.contains(m), "{what}: {methods}");
    }
    let allowed = headers.get("access-control-allow-headers").expect(what).to_str().unwrap().to_lowercase();
    for h in ALLOWED_HEADERS {
        assert!(allowed.contains(h), "{what}: {allowed} lacks {h}");
    }
}

async fn nip11_document_has_grasp_fields(frontend: Frontend) {
    let owner = Keys::generate();
    let server = frontend
        .builder()
        .arg("--relay-name=test relay")
        .env("GRASP_RELAY_OWNER_NSEC", owner.secret_key().to_bech32().unwrap())
        .start();
    let resp = reqwest::Client::new()
        .get(server.http_url())
        .header("Accept", "application/nostr+json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/nostr+json");
    assert_cors(resp.headers(), "NIP-11");
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["name"], "test relay");
    assert_eq!(doc["pubkey"], owner.public_key().to_hex());
    assert!(doc["description"].is_string());
    assert_eq!(doc["software"], "grasp-server");
    assert!(doc["version"].is_string());
    let nips: Vec<u64> =
        doc["supported_nips"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    for nip in [1, 9, 11, 34, 45, 77] {
        assert!(nips.contains(&nip), "supported_nips lacks {nip}: {nips:?}");
    }
    assert_eq!(doc["supported_grasps"], serde_json::json!(["GRASP-01", "GRASP-06"]));
    assert!(doc["repo_acceptance_criteria"].as_str().unwrap().contains(&server.addr));
    assert_eq!(doc["limitation"]["restricted_writes"], true);
    assert!(doc["limitation"]["max_limit"].is_u64());
    assert!(doc.get("curation").is_none(), "curation must be omitted when not curated");
    assert!(!doc.to_string().contains(&owner.secret_key().to_secret_hex()));
}

async fn landing_page_404_and_preflight_carry_cors(frontend: Frontend) {
    let server = frontend.start();
    let http = reqwest::Client::new();

    let landing = http.get(server.http_url()).send().await.unwrap();
    assert_eq!(landing.status(), 200);
    assert_cors(landing.headers(), "landing");
    assert!(landing.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(landing.text().await.unwrap().contains("GRASP"));

    for path in ["/nope", "/npub1xyz/repo.git", "/a/b/c"] {
        let resp = http.get(format!("{}{path}", server.http_url())).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert_cors(resp.headers(), "404");
    }
    let post_root = http.post(server.http_url()).body("x").send().await.unwrap();
    assert!(post_root.status().is_client_error());
    assert_cors(post_root.headers(), "POST /");

    for path in ["/", "/anything/at/all", "/npub1abc/repo.git/info/refs"] {
        let resp = http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", server.http_url()))
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "git-protocol, authorization, accept, content-encoding, x-requested-with",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "OPTIONS {path}");
        assert_cors(resp.headers(), "OPTIONS");
    }
}

async fn metrics_count_connections_and_events(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, "repo", &server.addr, &[])).await.unwrap();
    assert!(publish(&client, &events::orphan(&owner)).await.is_err());
    publish(&client, &EventBuilder::new(Kind::Custom(10317), "").sign_with_keys(&owner).unwrap())
        .await
        .unwrap();

    let resp = reqwest::get(format!("{}/metrics", server.http_url())).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_cors(resp.headers(), "metrics");
    let text = resp.text().await.unwrap();
    for line in [
        "ngit_websocket_connections_active 1",
        "ngit_events_received_total{kind=\"30617\"} 1",
        "grasp_events_held_total{kind=\"30617\"} 1",
        "grasp_purgatory_held{type=\"announcement\"} 1",
        "ngit_events_stored_total{kind=\"10317\"} 1",
        "ngit_events_rejected_total{kind=\"1\",reason=\"unrelated\"} 1",
        "ngit_websocket_messages_received_total{type=\"EVENT\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
}

frontend_tests!(
    nip11_document_has_grasp_fields,
    landing_page_404_and_preflight_carry_cors,
    metrics_count_connections_and_events,
);
