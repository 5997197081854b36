//! Relay sync, connection health: restarts and short disconnects are caught up, a peer
//! that is down does not slow the others, a peer that rate-limits us is left alone for a
//! while, dead peers are marked, this server is never its own peer, and sync can be off.

use std::time::{Duration, Instant};

use grasp_tests::events;
use grasp_tests::sync::{
    addr, free_port, metric_sum, not_syncing, publish, relay_label, syncing, wait_for_event, wait_metrics,
    Pair, Repo, DISCOVERED, PATIENCE,
};
use grasp_tests::{wait_until, TestServer};
use nostr_sdk::prelude::*;

#[tokio::test]
async fn b_restarted_catches_up_what_it_missed() {
    let mut pair = Pair::start(&[]).await;
    pair.b.stop();
    let issue = events::issue(&Keys::generate(), &pair.repo.coordinate);
    publish(&pair.a, &issue).await.expect("issue accepted on A while B is down");
    pair.b.resume();
    wait_for_event(&pair.b, &issue, "the issue B missed while it was down").await;
}

/// A restarts while B stays up. B waits 4 s before reconnecting, long enough for an issue
/// to be published to A while B is away; B's reconnect asks only for what was created
/// since it lost A (a gap catch-up) and finds it.
#[tokio::test]
async fn a_short_disconnect_is_caught_up_with_since() {
    let mut pair = Pair::start(&["--sync-reconnect-min-ms=4000"]).await;
    let label = relay_label(pair.a_port);
    wait_metrics(&pair.b, "B caught up with A", |m| {
        metric_sum(m, "ngit_sync_relay_connected", &[&label]) == 3.0
    })
    .await;
    pair.a.stop();
    pair.a.resume();
    let issue = events::issue(&Keys::generate(), &pair.repo.coordinate);
    publish(&pair.a, &issue).await.expect("issue accepted on A");
    wait_for_event(&pair.b, &issue, "the issue published while B was away from A").await;
    let metrics = wait_metrics(&pair.b, "B counts the issue as found by the gap catch-up", |m| {
        metric_sum(m, "ngit_sync_gap_events_total", &[]) >= 1.0
    })
    .await;
    assert!(
        metric_sum(&metrics, "ngit_sync_connection_attempts_total", &[&label, "result=\"success\""]) >= 2.0,
        "{metrics}"
    );
}

/// B's peers: one that accepts TCP connections and never answers (its first attempt hangs
/// for the whole test), one that refuses connections, and A. A's history reaches B while
/// the first is still trying to connect.
#[tokio::test]
async fn a_peer_that_is_down_does_not_slow_the_others() {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hung_port = hung.local_addr().expect("addr").port();
    let accepted = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            open.push(socket); // never answers, never closes
        }
    });
    let refused_port = free_port();
    let (a_port, b_port) = (free_port(), free_port());
    let a = not_syncing(a_port).start();
    let repo = Repo::new("busy", &[addr(a_port), addr(b_port)]);
    repo.host_on(&a).await;
    let issue = events::issue(&Keys::generate(), &repo.coordinate);
    publish(&a, &issue).await.expect("issue accepted on A");
    let bootstrap = [format!("ws://{}", addr(hung_port)), format!("ws://{}", addr(refused_port)), a.ws_url()];
    let b = syncing(b_port, &bootstrap).arg("--sync-connect-timeout-secs=600").start();
    wait_for_event(&b, &issue, "A's issue on B").await;
    let metrics = b.metrics().await;
    let (hung_label, refused_label) = (relay_label(hung_port), relay_label(refused_port));
    assert_eq!(
        metric_sum(&metrics, "ngit_sync_relay_connected", &[&hung_label]),
        1.0,
        "still connecting: {metrics}"
    );
    assert_eq!(metric_sum(&metrics, "ngit_sync_connection_attempts_total", &[&hung_label]), 0.0, "{metrics}");
    assert!(
        metric_sum(&metrics, "ngit_sync_connection_attempts_total", &[&refused_label, "result=\"failure\""])
            >= 1.0,
        "{metrics}"
    );
    assert_eq!(metric_sum(&metrics, "ngit_sync_relays_tracked_total", &[]), 3.0);
    accepted.abort();
}

/// A allows one subscription per connection. B's live subscription takes it, so the REQ
/// that fetches what negentropy found missing is refused with `rate-limited:`: B
/// disconnects and does not try A again while it cools down.
/// A allows one subscription, so B's live subscriptions are refused as rate-limited. B must
/// not connect to A while the cool-down lasts, and must come back after it.
///
/// B may be rate-limited again right after each reconnect, so "cooling down" seen twice can
/// span a whole cycle. What the test relies on instead: the cool-down seen first began
/// after the last snapshot that showed no cool-down, so every snapshot read before that
/// moment plus the cool-down falls inside it.
#[tokio::test]
async fn a_peer_that_rate_limits_us_is_left_alone_for_the_cool_down() {
    const COOL_DOWN: Duration = Duration::from_secs(5);
    let (a_port, b_port) = (free_port(), free_port());
    let a = not_syncing(a_port).arg("--max-subscriptions=1").start();
    Repo::new("anything", &[addr(a_port)]).host_on(&a).await;
    let mut not_cooling_at = Instant::now();
    let b = syncing(b_port, &[a.ws_url()])
        .arg(format!("--sync-rate-limit-cooldown-secs={}", COOL_DOWN.as_secs()))
        .start();
    let label = relay_label(a_port);
    let status = |m: &str| metric_sum(m, "ngit_sync_relay_status", &[&label]);
    let successes =
        |m: &str| metric_sum(m, "ngit_sync_connection_attempts_total", &[&label, "result=\"success\""]);
    let deadline = Instant::now() + PATIENCE;
    let attempts_then = loop {
        let asked = Instant::now();
        let m = b.metrics().await;
        if status(&m) == 5.0 {
            break successes(&m);
        }
        not_cooling_at = asked;
        assert!(Instant::now() < deadline, "B never cooled down after A rate-limited it: {m}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let cooling_until = not_cooling_at + COOL_DOWN;
    let checked_inside = std::cell::Cell::new(0);
    let reconnected = wait_until("B tries A again after the cool-down", PATIENCE, || async {
        let m = b.metrics().await;
        if Instant::now() < cooling_until {
            assert_eq!(successes(&m), attempts_then, "connected during the cool-down: {m}");
            checked_inside.set(checked_inside.get() + 1);
        }
        (successes(&m) > attempts_then).then_some(m)
    })
    .await;
    assert!(successes(&reconnected) > attempts_then);
    assert!(checked_inside.get() > 0, "no snapshot fell inside the cool-down; the test proved nothing");
}

#[tokio::test]
async fn a_peer_down_for_long_is_marked_dead() {
    let refused_port = free_port();
    let b = syncing(free_port(), &[format!("ws://{}", addr(refused_port))])
        .arg("--sync-dead-after-secs=2")
        .arg("--sync-dead-retry-secs=600")
        .start();
    let label = relay_label(refused_port);
    let metrics = wait_metrics(&b, "the unreachable peer marked dead", |m| {
        metric_sum(m, "ngit_sync_relay_status", &[&label]) == 4.0
            && metric_sum(m, "ngit_sync_relays_dead_total", &[]) == 1.0
    })
    .await;
    // Dead peers are tried every `sync_dead_retry_secs` (600 s here): no more attempts now.
    let attempts = metric_sum(&metrics, "ngit_sync_connection_attempts_total", &[&label]);
    tokio::time::sleep(Duration::from_secs(2)).await; // an observation window, not a wait for a condition
    let later = b.metrics().await;
    assert_eq!(metric_sum(&later, "ngit_sync_connection_attempts_total", &[&label]), attempts, "{later}");
}

/// B is given its own URL in several spellings and A as bootstrap relays, and holds an
/// announcement that lists B and a relay D: A and D are peers, B never.
#[tokio::test]
async fn this_server_is_never_its_own_peer() {
    let (a_port, b_port, d_port) = (free_port(), free_port(), free_port());
    let a = not_syncing(a_port).start();
    let mut bootstrap = vec![
        format!("ws://127.0.0.1:{b_port}/"),
        format!("127.0.0.1:{b_port}"),
        format!("http://localhost:{b_port}"),
        format!("WSS://LOCALHOST:{b_port}"),
    ];
    bootstrap.push(a.ws_url());
    let b = syncing(b_port, &bootstrap).start();
    let repo = Repo::new("self", &[addr(b_port), format!("LocalHost:{b_port}"), addr(d_port)]);
    // Hosted (stored): a held announcement's relays are never dialed.
    repo.host_on(&b).await;
    // D's series appear with its first connection attempt.
    let metrics = wait_metrics(&b, "B tracks A (bootstrap) and D (from the announcement)", |m| {
        metric_sum(m, "ngit_sync_relays_tracked_total", &[]) == 2.0 && m.contains(DISCOVERED)
    })
    .await;
    assert!(metrics.contains(&relay_label(a_port)) && metrics.contains(DISCOVERED), "{metrics}");
    assert!(!metrics.contains(&format!(":{b_port}")), "no series for B's own URL: {metrics}");
}

#[tokio::test]
async fn with_sync_off_no_peer_is_contacted() {
    let a_port = free_port();
    let a = not_syncing(a_port).start();
    let b = TestServer::builder()
        .arg("--sync=false")
        .arg(format!("--sync-bootstrap-relays={}", a.ws_url()))
        .start();
    let metrics = b.metrics().await;
    assert!(!metrics.contains("ngit_sync_"), "no sync metrics when sync is off: {metrics}");
    assert!(b.log().contains("relay sync is off"), "{}", b.log());
    let grasps = b.nip11().await["supported_grasps"].clone();
    assert!(
        !grasps.as_array().unwrap().contains(&serde_json::json!("GRASP-02")),
        "no GRASP-02 without sync: {grasps}"
    );
    let a_metrics = a.metrics().await;
    assert_eq!(metric_sum(&a_metrics, "ngit_websocket_connections_total", &[]), 0.0, "{a_metrics}");
}
