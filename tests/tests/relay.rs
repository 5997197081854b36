//! NIP-01 / NIP-45 / NIP-77 behaviour of the relay, driven by nostr-sdk and a raw websocket.

use std::time::Duration;

use grasp_tests::events;
use grasp_tests::{fetch, frontend_tests, host_repository, publish, Frontend, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::json;

/// A server with one hosted repository; returns its owner and coordinate.
async fn hosted_repo(server: &TestServer, client: &Client) -> (Keys, String) {
    let owner = Keys::generate();
    let coordinate = host_repository(server, client, &owner, "repo", &[]).await;
    (owner, coordinate)
}

async fn publish_fetch_live_delivery_and_count(frontend: Frontend) {
    let server = frontend.start();
    let publisher = server.client().await;
    let (_, repo) = hosted_repo(&server, &publisher).await;

    let first = events::issue(&Keys::generate(), &repo);
    publish(&publisher, &first).await.expect("issue accepted");
    let stored = fetch(&publisher, Filter::new().kind(Kind::Custom(1621))).await;
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), vec![first.id]);

    // live delivery to a subscription opened before the event exists
    let subscriber = server.client().await;
    let mut notifications = subscriber.notifications();
    subscriber.subscribe(Filter::new().kind(Kind::Custom(1621)).limit(0), None).await.unwrap();
    let second = events::issue(&Keys::generate(), &repo);
    publish(&publisher, &second).await.expect("second issue accepted");
    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(RelayPoolNotification::Event { event, .. }) = notifications.recv().await {
                if event.kind == Kind::Custom(1621) {
                    return event.id;
                }
            }
        }
    })
    .await
    .expect("live event within 10 s");
    assert_eq!(delivered, second.id);

    // NIP-45 COUNT through nostr-sdk
    let relay = publisher.relay(server.ws_url()).await.unwrap();
    let n =
        relay.count_events(Filter::new().kind(Kind::Custom(1621)), Duration::from_secs(10)).await.unwrap();
    assert_eq!(n, 2);
    let n =
        relay.count_events(Filter::new().kind(Kind::Custom(30617)), Duration::from_secs(10)).await.unwrap();
    assert_eq!(n, 1);
}

async fn close_stops_live_delivery_for_that_subscription_only(frontend: Frontend) {
    let server = frontend.start();
    let publisher = server.client().await;
    let (_, repo) = hosted_repo(&server, &publisher).await;
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let filter = json!({"kinds": [1621], "limit": 0});
    assert!(raw.req("one", &[filter.clone()]).await.unwrap().is_empty());
    raw.send(json!(["CLOSE", "one"])).await;
    assert!(raw.req("two", &[filter]).await.unwrap().is_empty());

    let issue = events::issue(&Keys::generate(), &repo);
    publish(&publisher, &issue).await.unwrap();
    // Live events for all of a connection's subscriptions are sent together, so a closed
    // "one" would show up before (or with) "two".
    loop {
        let msg = raw.recv().await;
        assert_ne!(msg[1], "one", "closed subscription still delivered: {msg}");
        if msg[0] == "EVENT" && msg[1] == "two" {
            assert_eq!(msg[2]["id"], issue.id.to_hex());
            break;
        }
    }
}

async fn negentropy_sync_with_nostr_sdk(frontend: Frontend) {
    let server = frontend.start();
    let publisher = server.client().await;
    let (_, repo) = hosted_repo(&server, &publisher).await;
    let mut issues = Vec::new();
    for _ in 0..5 {
        let issue = events::issue(&Keys::generate(), &repo);
        publish(&publisher, &issue).await.unwrap();
        issues.push(issue);
    }

    // The syncing client already has two of the five issues locally.
    let database = MemoryDatabase::with_opts(MemoryDatabaseOptions { events: true, max_events: None });
    for issue in &issues[..2] {
        database.save_event(issue).await.unwrap();
    }
    let syncer = Client::builder().database(database).build();
    syncer.add_relay(server.ws_url()).await.unwrap();
    syncer.connect().await;
    syncer.wait_for_connection(Duration::from_secs(10)).await;

    let opts = SyncOptions::default().direction(SyncDirection::Down);
    let output = syncer.sync(Filter::new().kind(Kind::Custom(1621)), &opts).await.expect("sync");
    assert!(output.failed.is_empty(), "sync failed: {:?}", output.failed);
    let expected: std::collections::HashSet<EventId> = issues[2..].iter().map(|e| e.id).collect();
    assert_eq!(output.val.remote, expected, "relay-only ids");
    assert_eq!(output.val.received, expected, "downloaded ids");
    assert!(output.val.local.is_empty());
    let local = syncer.database().query(Filter::new().kind(Kind::Custom(1621))).await.unwrap();
    assert_eq!(local.len(), 5);
}

async fn replaceable_events_keep_only_the_newest(frontend: Frontend) {
    let server = frontend.start();
    let keys = Keys::generate();
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let make = |relay: &str, at: u64| {
        EventBuilder::new(Kind::Custom(10317), "")
            .tag(Tag::parse(["g", relay]).unwrap())
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(&keys)
            .unwrap()
    };
    let now = Timestamp::now().as_secs();
    let (v1, v2, v0) = (make("ws://a", now - 100), make("ws://b", now - 50), make("ws://c", now - 200));
    assert_eq!(raw.publish(&events::json(&v1)).await, (true, String::new()));
    assert_eq!(raw.publish(&events::json(&v2)).await, (true, String::new()));
    let (ok, msg) = raw.publish(&events::json(&v0)).await;
    assert!(!ok && msg.starts_with("invalid:"), "older version refused: {msg}");
    let (ok, msg) = raw.publish(&events::json(&v2)).await;
    assert!(ok && msg.starts_with("duplicate:"), "{msg}");
    let got = raw.req("a", &[json!({"kinds": [10317]})]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], v2.id.to_hex());
}

async fn forged_events_are_rejected_with_invalid(frontend: Frontend) {
    let server = frontend.start();
    let owner = Keys::generate();
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let good = events::json(&events::announcement(&owner, "repo", &server.addr, &[]));

    let mut bad_id = good.clone();
    bad_id["content"] = json!("tampered");
    let (ok, msg) = raw.publish(&bad_id).await;
    assert!(!ok && msg.starts_with("invalid:") && msg.contains("id"), "{msg}");

    let mut bad_sig = good.clone();
    let sig = bad_sig["sig"].as_str().unwrap().to_owned();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    bad_sig["sig"] = json!(format!("{flipped}{}", &sig[1..]));
    let (ok, msg) = raw.publish(&bad_sig).await;
    assert!(!ok && msg.starts_with("invalid:") && msg.contains("signature"), "{msg}");

    let mut not_an_event = good.clone();
    not_an_event["kind"] = json!("thirty");
    let (ok, msg) = raw.publish(&not_an_event).await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");

    // nothing was kept, and the genuine event still goes through (held until its git data)
    assert!(raw.req("s", &[json!({"kinds": [30617]})]).await.unwrap().is_empty());
    assert_eq!(
        raw.publish(&good).await,
        (true, "purgatory: won't be served until git data arrives".to_owned())
    );
}

async fn malformed_messages_get_a_notice_and_the_connection_keeps_working(frontend: Frontend) {
    let server = frontend.builder().arg("--max-message-size=4096").start();
    let mut raw = RawClient::connect(&server.ws_url()).await;
    for garbage in ["{not json", "[]", "{\"a\":1}", "[\"NOPE\"]", "[\"REQ\"]", "[\"CLOSE\"]", "[42]"] {
        raw.send_text(garbage).await;
        let reply = raw.recv().await;
        assert!(
            reply[0] == "NOTICE" && reply[1].as_str().unwrap().starts_with("invalid:"),
            "{garbage} -> {reply}"
        );
    }
    // too large for the relay's limit, but within the transport cap
    raw.send_text(format!("[\"REQ\",\"big\",{{\"search\":\"{}\"}}]", "x".repeat(5000))).await;
    let reply = raw.recv().await;
    assert_eq!(reply[0], "NOTICE");
    assert!(reply[1].as_str().unwrap().contains("exceeds the limit"), "{reply}");
    // bad filter inside a REQ: CLOSED for that subscription
    raw.send(json!(["REQ", "bad", {"ids": ["nothex"]}])).await;
    let reply = raw.recv().await;
    assert_eq!((reply[0].as_str(), reply[1].as_str()), (Some("CLOSED"), Some("bad")), "{reply}");
    // still usable
    assert_eq!(raw.req("fine", &[json!({"kinds": [1]})]).await, Ok(vec![]));
}

async fn subscription_and_filter_limits_are_enforced(frontend: Frontend) {
    let server =
        frontend.builder().arg("--max-subscriptions=2").arg("--max-filters=2").arg("--max-limit=2").start();
    let publisher = server.client().await;
    let (_, repo) = hosted_repo(&server, &publisher).await;
    for _ in 0..3 {
        publish(&publisher, &events::issue(&Keys::generate(), &repo)).await.unwrap();
    }
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let f = json!({"kinds": [1621], "limit": 10});
    assert_eq!(raw.req("a", &[f.clone()]).await.unwrap().len(), 2, "limit clamped to max_limit");
    assert_eq!(raw.req("b", &[f.clone()]).await.unwrap().len(), 2);
    let err = raw.req("c", &[f.clone()]).await.unwrap_err();
    assert!(err.starts_with("rate-limited:") && err.contains("subscriptions"), "{err}");
    // replacing an existing subscription id is allowed
    assert!(raw.req("a", &[f.clone()]).await.is_ok());
    raw.send(json!(["CLOSE", "b"])).await;
    let err = raw.req("b", &[f.clone(), f.clone(), f.clone()]).await.unwrap_err();
    assert!(err.starts_with("invalid:") && err.contains("filters"), "{err}");
    let err = raw.req(&"x".repeat(65), &[f.clone()]).await.unwrap_err();
    assert!(err.starts_with("invalid:"), "{err}");
}

async fn events_per_minute_per_ip_is_enforced(frontend: Frontend) {
    let server = frontend.builder().arg("--events-per-minute=3").start();
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let keys = Keys::generate();
    let mut answers = Vec::new();
    for i in 0..4 {
        let ev = events::announcement(&keys, &format!("r{i}"), &server.addr, &[]);
        answers.push(raw.publish(&events::json(&ev)).await);
    }
    assert!(answers[..3].iter().all(|(ok, _)| *ok), "{answers:?}");
    assert!(!answers[3].0 && answers[3].1.starts_with("rate-limited:"), "{answers:?}");
}

async fn forwarded_for_gives_each_client_behind_a_proxy_its_own_budget(frontend: Frontend) {
    let server = frontend.builder().arg("--events-per-minute=2").arg("--trust-forwarded-for").start();
    let keys = Keys::generate();
    let mut n = 0;
    let mut publish_as = |forwarded: &'static str| {
        n += 1;
        let ev = events::announcement(&keys, &format!("r{n}"), &server.addr, &[]);
        let url = server.ws_url();
        async move {
            // what nginx's $proxy_add_x_forwarded_for sends: client-supplied entries, then the real one
            let header = format!("1.1.1.1, {forwarded}");
            let mut raw = RawClient::connect_with_headers(&url, &[("X-Forwarded-For", &header)]).await;
            raw.publish(&events::json(&ev)).await
        }
    };
    assert!(publish_as("203.0.113.1").await.0);
    assert!(publish_as("203.0.113.1").await.0);
    let (ok, msg) = publish_as("203.0.113.1").await;
    assert!(!ok && msg.starts_with("rate-limited:"), "third event from one client: {msg}");
    assert!(publish_as("203.0.113.2").await.0, "another client behind the same proxy has its own budget");
}

async fn negentropy_errors_are_reported_per_session(frontend: Frontend) {
    let server = frontend.start();
    let mut raw = RawClient::connect(&server.ws_url()).await;
    raw.send(json!(["NEG-OPEN", "n1", {"kinds": [1]}, "zz-not-hex"])).await;
    let reply = raw.recv().await;
    assert_eq!(reply[0], "NEG-ERR");
    assert_eq!(reply[1], "n1");
    raw.send(json!(["NEG-MSG", "unknown", "61"])).await;
    let reply = raw.recv().await;
    assert_eq!(reply[0], "NEG-ERR");
    assert!(reply[2].as_str().unwrap().starts_with("closed:"), "{reply}");
    // A valid empty-set initial message (protocol byte 0x61, no ranges) gets a NEG-MSG.
    raw.send(json!(["NEG-OPEN", "n2", {"kinds": [1]}, "61"])).await;
    let reply = raw.recv().await;
    assert_eq!(reply[0], "NEG-MSG", "{reply}");
    assert_eq!(raw.req("after", &[json!({"kinds": [1]})]).await, Ok(vec![]));
}

async fn queries_are_bounded_search_count_negentropy_and_req(frontend: Frontend) {
    let server = frontend
        .builder()
        .arg("--event-policy=accept-all")
        .arg("--max-count=5")
        .arg("--max-negentropy-items=5")
        .arg("--max-req-bytes=20000")
        .start();
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let keys = Keys::generate();
    for i in 0..10 {
        let at = Timestamp::from(Timestamp::now().as_secs() - 100 + i);
        let note = EventBuilder::text_note(format!("{i} {}", "x".repeat(3000)))
            .custom_created_at(at)
            .sign_with_keys(&keys)
            .unwrap();
        assert!(raw.publish(&events::json(&note)).await.0);
    }
    // NIP-50 search would scan everything: refused with a reason.
    let refused = raw.req("s", &[json!({"kinds": [1], "search": "x"})]).await.unwrap_err();
    assert!(refused.starts_with("invalid:") && refused.contains("search"), "{refused}");
    // COUNT stops at its cap and says it is approximate.
    raw.send(json!(["COUNT", "c", {"kinds": [1]}, {"authors": [keys.public_key().to_hex()]}])).await;
    let count = raw.recv().await;
    assert_eq!(count[0], "COUNT", "{count}");
    assert_eq!(count[2]["count"], 5);
    assert_eq!(count[2]["approximate"], true, "{count}");
    raw.send(json!(["COUNT", "small", {"kinds": [1], "limit": 2}])).await;
    assert_eq!(raw.recv().await[2], json!({"count": 2}));
    // NEG-OPEN over more than the cap is refused before it loads everything.
    raw.send(json!(["NEG-OPEN", "n", {"kinds": [1]}, "61"])).await;
    let neg = raw.recv().await;
    assert_eq!(neg[0], "NEG-ERR", "{neg}");
    assert!(neg[2].as_str().unwrap().starts_with("blocked:"), "{neg}");
    // One REQ answer stays within its byte budget, newest first, then EOSE.
    let answer = raw.req("r", &[json!({"kinds": [1]})]).await.unwrap();
    assert!((1..10).contains(&answer.len()), "{} events within 20 kB", answer.len());
    let newest = answer[0]["content"].as_str().unwrap();
    assert!(newest.starts_with("9 "), "newest first: {}", &newest[..5]);
}

/// A REQ answer larger than one page (about 2.4 MB here) is written page by page: every
/// event arrives once, newest first, then EOSE, and the connection goes on.
async fn a_long_answer_arrives_whole_and_in_order(frontend: Frontend) {
    let server = frontend.builder().arg("--event-policy=accept-all").arg("--events-per-minute=10000").start();
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let keys = Keys::generate();
    let base = Timestamp::now().as_secs() - 100;
    for i in 0..300u64 {
        // Three seconds only: pages must cross many events of one second.
        let note = EventBuilder::text_note(format!("{i} {}", "y".repeat(8000)))
            .custom_created_at(Timestamp::from(base + i % 3))
            .sign_with_keys(&keys)
            .unwrap();
        assert!(raw.publish(&events::json(&note)).await.0);
    }
    let answer = raw.req("all", &[json!({"kinds": [1], "limit": 500})]).await.unwrap();
    assert_eq!(answer.len(), 300);
    let ids: std::collections::HashSet<&str> = answer.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 300, "each event once");
    let times: Vec<u64> = answer.iter().map(|e| e["created_at"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    // Two filters over the same events: still each once.
    let both = raw
        .req(
            "both",
            &[
                json!({"kinds": [1], "limit": 120}),
                json!({"authors": [keys.public_key().to_hex()], "limit": 200}),
            ],
        )
        .await
        .unwrap();
    assert_eq!(both.len(), 200);
    assert_eq!(raw.req("after", &[json!({"kinds": [1], "limit": 1})]).await.unwrap().len(), 1);
}

frontend_tests!(
    a_long_answer_arrives_whole_and_in_order,
    queries_are_bounded_search_count_negentropy_and_req,
    publish_fetch_live_delivery_and_count,
    close_stops_live_delivery_for_that_subscription_only,
    negentropy_sync_with_nostr_sdk,
    replaceable_events_keep_only_the_newest,
    forged_events_are_rejected_with_invalid,
    malformed_messages_get_a_notice_and_the_connection_keeps_working,
    subscription_and_filter_limits_are_enforced,
    events_per_minute_per_ip_is_enforced,
    forwarded_for_gives_each_client_behind_a_proxy_its_own_budget,
    negentropy_errors_are_reported_per_session,
);
