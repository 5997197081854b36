//! Slow and flooding clients: stalled request headers, a push whose body stalls, silent
//! websockets and the connection caps. Each test starts its own server with short limits.

use std::time::Duration;

use grasp_tests::git::{bare_refs, Workdir};
use grasp_tests::http::request;
use grasp_tests::metrics::Exposition;
use grasp_tests::procfs::working_in;
use grasp_tests::{
    events, frontend_tests, host_repository, memory, publish, wait_until, Frontend, RawClient, TestServer,
};
use nostr_sdk::prelude::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Reads until the server closes the connection; returns what it sent, or `None` if it
/// kept the connection open for `timeout`.
async fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// `GET /` asking for NIP-11 over a fresh connection from `source` (an address of this
/// machine); the status code.
async fn nip11_status_from(source: &str, server: &str) -> Option<u16> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(format!("{source}:0").parse().ok()?).ok()?;
    let mut stream = socket.connect(server.parse().ok()?).await.ok()?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {server}\r\nAccept: application/nostr+json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let answer = read_until_closed(&mut stream, Duration::from_secs(30)).await?;
    String::from_utf8_lossy(&answer).split_whitespace().nth(1)?.parse().ok()
}

/// The value of `name` with `labels` on `server`'s /metrics (0 when absent).
async fn metric_of(server: &TestServer, name: &str, labels: &[(&str, &str)]) -> f64 {
    // A connection this address closed just before may hold its slot a moment after the
    // client saw it close (grasp-proxy releases it once pingora has finished with the
    // connection): ask until this request is admitted.
    let url = format!("{}/metrics", server.http_url());
    let text = wait_until("/metrics answers", Duration::from_secs(30), || async {
        let response = reqwest::get(&url).await.ok()?;
        if response.status() != 200 {
            return None;
        }
        response.text().await.ok()
    })
    .await;
    Exposition::parse(&text).value(name, labels).unwrap_or(0.0)
}

async fn stalled_headers_are_closed_while_other_clients_are_served(frontend: Frontend) {
    let server = frontend
        .builder()
        .arg("--header-read-timeout-secs=3")
        .arg("--max-connections-per-ip=0")
        .arg("--max-connections=2000")
        .start();
    // 300 clients send half a request header and then nothing; 20 send nothing at all.
    let mut stalled = Vec::new();
    for i in 0..320 {
        let mut stream = TcpStream::connect(&server.addr).await.expect("connect");
        if i < 300 {
            stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half-A-Head").await.unwrap();
        }
        stalled.push(stream);
    }
    // A normal client is served throughout.
    let addr = server.addr.clone();
    let (done, mut finished) = tokio::sync::watch::channel(false);
    let normal = tokio::spawn(async move {
        let mut served = 0;
        while !*finished.borrow() {
            assert_eq!(nip11_status_from("127.0.0.1", &addr).await, Some(200), "a normal request failed");
            served += 1;
            let _ = tokio::time::timeout(Duration::from_millis(100), finished.changed()).await;
        }
        served
    });
    let mut ws = RawClient::connect(&server.ws_url()).await;
    assert_eq!(ws.req("s", &[json!({"kinds": [1]})]).await, Ok(vec![]));
    // Every stalled connection is closed by the server: after the configured 3 s, well
    // before hyper's own 30 s default would close them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for (i, stream) in stalled.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            read_until_closed(stream, left).await.is_some(),
            "stalled connection {i} is still open after 20 s (header_read_timeout_secs is 3)"
        );
    }
    done.send(true).unwrap();
    assert!(normal.await.unwrap() >= 1);
    // Each close is counted as its connection task ends, which may be just after the client
    // saw the connection close.
    wait_until("every stalled connection counted", Duration::from_secs(10), || async {
        let counted = metric_of(&server, "grasp_client_timeouts_total", &[("stalled", "header_read")]).await;
        (counted >= 320.0).then_some(())
    })
    .await;
    // The server still works, and the websocket (past its headers) was not touched.
    assert_eq!(ws.req("t", &[json!({"kinds": [1]})]).await, Ok(vec![]));
    assert_eq!(nip11_status_from("127.0.0.1", &server.addr).await, Some(200));
}

fn pkt_line(data: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data.as_bytes());
    out
}

async fn a_push_that_stalls_mid_body_is_aborted_and_lands_nothing(frontend: Frontend) {
    let server = frontend.builder().arg("--body-idle-timeout-secs=2").start();
    let client = server.client().await;
    let owner = Keys::generate();
    host_repository(&server, &client, &owner, "stall", &[]).await;
    let url = server.clone_url(&owner.public_key(), "stall");
    let repo = server.repo_path(&owner.public_key(), "stall");
    let before = bare_refs(&repo);

    let work = Workdir::clone_from(&url, &[]);
    memory::write_random_file(&work.path().join("big.bin"), 2 << 20);
    let old = work.rev("HEAD");
    let new = work.commit("note", b"a big change");
    // Signed a second later than host_repository's state, so it is the newer one.
    let later = Timestamp::from(Timestamp::now().as_secs() + 1);
    publish(&client, &events::state_at(&owner, "stall", &[("refs/heads/main", &new)], Some("main"), later))
        .await
        .expect("state held");

    // The client sends the commands and half of the pack, then nothing.
    let mut body =
        pkt_line(&format!("{old} {new} refs/heads/main\0report-status side-band-64k agent=git/2.47\n"));
    body.extend_from_slice(b"0000");
    let pack = work.pack(&old, &new);
    let cut = body.len() + pack.len() / 2;
    body.extend_from_slice(&pack);
    let path = format!("/{}/stall.git/git-receive-pack", owner.public_key().to_bech32().unwrap());
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-git-receive-pack-request\r\n\
         Content-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..cut]).await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(60)).await.expect("the server gives up");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("sent nothing for 2 s"), "{answer}");

    // Nothing of it landed, and git is gone with its quarantined objects.
    wait_until("git processes in the repository ended", Duration::from_secs(30), || async {
        working_in(&repo).is_empty().then_some(())
    })
    .await;
    assert_eq!(bare_refs(&repo), before);
    let quarantine: Vec<_> = std::fs::read_dir(repo.join("objects"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("incoming-"))
        .collect();
    assert!(quarantine.is_empty(), "half-received objects left behind: {quarantine:?}");
    assert!(metric_of(&server, "grasp_client_timeouts_total", &[("stalled", "body_idle")]).await >= 1.0);

    // The same push from a client that keeps sending lands.
    work.ok(&["push", &url, "main"]);
    assert!(bare_refs(&repo).0.contains(&("refs/heads/main".to_owned(), new)));
}

async fn silent_websockets_are_closed_and_answering_ones_stay(frontend: Frontend) {
    let server =
        frontend.builder().arg("--websocket-ping-interval-secs=1").arg("--websocket-missed-pongs=2").start();
    // Never reads, so never answers a ping.
    let _silent = RawClient::connect(&server.ws_url()).await;
    let mut lively = RawClient::connect(&server.ws_url()).await;
    // Reading answers pings: the connection outlives several silence limits.
    assert!(lively.wait_for_pings(6, Duration::from_secs(60)).await, "pings stopped: closed?");
    assert_eq!(lively.req("s", &[json!({"kinds": [1]})]).await, Ok(vec![]));
    wait_until("the silent websocket is closed", Duration::from_secs(30), || async {
        (metric_of(&server, "grasp_client_timeouts_total", &[("stalled", "websocket_silent")]).await >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(lively.req("t", &[json!({"kinds": [1]})]).await, Ok(vec![]));
}

async fn a_websocket_that_stops_reading_is_dropped_while_others_keep_receiving(frontend: Frontend) {
    let server = frontend
        .builder()
        .arg("--event-policy=accept-all")
        .arg("--websocket-ping-interval-secs=1")
        .arg("--websocket-missed-pongs=3")
        .start();
    // Signed before the websockets open: signing 24 MB takes seconds in a debug build on a
    // busy machine, and the reading client (on this test's one thread) could not answer the
    // server's pings meanwhile, so the server would rightly drop it as silent.
    let keys = Keys::generate();
    let events: Vec<Event> = (0..120)
        .map(|i| {
            EventBuilder::text_note(format!("{i} {}", "x".repeat(200_000))).sign_with_keys(&keys).unwrap()
        })
        .collect();
    let mut stuck = RawClient::connect(&server.ws_url()).await;
    assert_eq!(stuck.req("live", &[json!({"kinds": [1]})]).await, Ok(vec![]));
    let mut reading = RawClient::connect(&server.ws_url()).await;
    assert_eq!(reading.req("live", &[json!({"kinds": [1]})]).await, Ok(vec![]));
    let rss_before = memory::rss(server.pid());
    let sent: Vec<String> = events.iter().map(|e| e.id.to_hex()).collect();
    let expected = sent.len();
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        while received.len() < expected {
            let message =
                reading.try_recv(Duration::from_secs(30)).await.expect("the reading client keeps receiving");
            if message[0] == "EVENT" {
                received.push(message[2]["id"].as_str().unwrap().to_owned());
            }
        }
        received
    });
    // 24 MB of events while one subscriber reads nothing (not even pings).
    let mut publisher = RawClient::connect(&server.ws_url()).await;
    for event in &events {
        assert!(publisher.publish(&events::json(event)).await.0);
    }
    assert_eq!(reader.await.unwrap(), sent, "the reading client got every event, in order");
    wait_until("the stuck websocket is dropped", Duration::from_secs(30), || async {
        let write =
            metric_of(&server, "grasp_client_timeouts_total", &[("stalled", "websocket_write")]).await;
        let silent =
            metric_of(&server, "grasp_client_timeouts_total", &[("stalled", "websocket_silent")]).await;
        (write + silent >= 1.0).then_some(())
    })
    .await;
    let grown = memory::rss(server.pid()).saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "the server grew by {} MiB for 24 MB sent to a reader that never read",
        grown >> 20
    );
    drop(stuck);
}

async fn per_ip_cap_refuses_only_the_extra_connections(frontend: Frontend) {
    let server = frontend.builder().arg("--max-connections-per-ip=3").start();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(RawClient::connect(&server.ws_url()).await);
    }
    // The fourth connection from this address is answered 503 at once and closed.
    let mut extra = TcpStream::connect(&server.addr).await.unwrap();
    let answer = read_until_closed(&mut extra, Duration::from_secs(30)).await.expect("closed at once");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many open connections from your address (at most 3)"), "{answer}");
    assert!(RawClient::try_connect_with_headers(&server.ws_url(), &[]).await.is_err());
    // The established connections are untouched; another address is admitted.
    for (i, client) in open.iter_mut().enumerate() {
        assert_eq!(client.req(&format!("s{i}"), &[json!({"kinds": [1]})]).await, Ok(vec![]));
    }
    assert_eq!(nip11_status_from("127.0.0.2", &server.addr).await, Some(200));
    // A closed connection gives its slot back.
    drop(open.pop());
    wait_until("a slot is free again", Duration::from_secs(30), || async {
        (nip11_status_from("127.0.0.1", &server.addr).await == Some(200)).then_some(())
    })
    .await;
    assert!(metric_of(&server, "grasp_connections_refused_total", &[("cap", "per_ip")]).await >= 2.0);
}

async fn total_cap_refuses_new_connections_and_keeps_the_open_ones(frontend: Frontend) {
    let server = frontend.builder().arg("--max-connections=3").arg("--max-connections-per-ip=0").start();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(RawClient::connect(&server.ws_url()).await);
    }
    let mut extra = TcpStream::connect(&server.addr).await.unwrap();
    let answer = read_until_closed(&mut extra, Duration::from_secs(30)).await.expect("closed at once");
    assert!(String::from_utf8_lossy(&answer).contains("too many open connections (at most 3)"));
    assert_eq!(nip11_status_from("127.0.0.2", &server.addr).await, Some(503));
    for (i, client) in open.iter_mut().enumerate() {
        assert_eq!(client.req(&format!("s{i}"), &[json!({"kinds": [1]})]).await, Ok(vec![]));
    }
}

async fn behind_a_trusted_proxy_the_per_ip_cap_uses_the_forwarded_address(frontend: Frontend) {
    let server = frontend.builder().arg("--trust-forwarded-for").arg("--max-connections-per-ip=2").start();
    // What nginx's $proxy_add_x_forwarded_for sends: client entries, then the real address.
    let from = |ip: &str| format!("6.6.6.6, {ip}");
    let a = from("203.0.113.1");
    let mut first =
        RawClient::try_connect_with_headers(&server.ws_url(), &[("X-Forwarded-For", &a)]).await.unwrap();
    let _second =
        RawClient::try_connect_with_headers(&server.ws_url(), &[("X-Forwarded-For", &a)]).await.unwrap();
    let third = RawClient::try_connect_with_headers(&server.ws_url(), &[("X-Forwarded-For", &a)]).await;
    let refusal = third.err().expect("a third websocket from one client is refused");
    assert!(refusal.starts_with("HTTP 503"), "{refusal}");
    // The refusal says why. (Read over plain HTTP to the end: a websocket client keeps only
    // what arrived with the status line.)
    let plain = request(&server.addr, "GET", "/", &[("X-Forwarded-For", &a)], b"").await;
    assert_eq!(plain.status, 503);
    assert!(String::from_utf8_lossy(&plain.body).contains("at most 2"), "{:?}", plain.body);
    // Another client behind the same proxy (same TCP peer) is admitted.
    let b = from("203.0.113.2");
    let mut other =
        RawClient::try_connect_with_headers(&server.ws_url(), &[("X-Forwarded-For", &b)]).await.unwrap();
    assert_eq!(other.req("s", &[json!({"kinds": [1]})]).await, Ok(vec![]));
    assert_eq!(first.req("s", &[json!({"kinds": [1]})]).await, Ok(vec![]));
    // Closing a websocket frees its client's slot.
    drop(first);
    wait_until("the client's slot is free again", Duration::from_secs(30), || async {
        RawClient::try_connect_with_headers(&server.ws_url(), &[("X-Forwarded-For", &a)]).await.ok()
    })
    .await;
}

async fn git_processes_are_capped_with_a_503_and_the_server_recovers(frontend: Frontend) {
    let server = frontend.builder().arg("--max-git-processes=1").arg("--git-queue-wait-secs=1").start();
    let client = server.client().await;
    let owner = Keys::generate();
    host_repository(&server, &client, &owner, "capped", &[]).await;
    let url = server.clone_url(&owner.public_key(), "capped");
    let path = url.trim_start_matches(&server.http_url()).to_owned();
    // A negotiation that never finishes keeps its git process (and the one slot) busy.
    let mut stalled = TcpStream::connect(&server.addr).await.unwrap();
    let head = format!(
        "POST {path}/git-upload-pack HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Length: 100000\r\n\r\n0032want ",
        server.addr
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let info_refs = format!("{path}/info/refs?service=git-upload-pack");
    let busy = wait_until("the slot is taken", Duration::from_secs(30), || async {
        let r = request(&server.addr, "GET", &info_refs, &[], b"").await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert!(busy.header("retry-after").is_some(), "503 says when to retry");
    assert!(
        String::from_utf8_lossy(&busy.body).contains("git processes"),
        "{}",
        String::from_utf8_lossy(&busy.body)
    );
    // The client gives up: its git process ends and the slot is free again.
    drop(stalled);
    wait_until("git requests are served again", Duration::from_secs(30), || async {
        (request(&server.addr, "GET", &info_refs, &[], b"").await.status == 200).then_some(())
    })
    .await;
    let metrics = server.metrics().await;
    assert!(metrics.contains("grasp_git_busy_total{cap=\"total\"}"), "{metrics}");
}

frontend_tests!(
    git_processes_are_capped_with_a_503_and_the_server_recovers,
    stalled_headers_are_closed_while_other_clients_are_served,
    a_push_that_stalls_mid_body_is_aborted_and_lands_nothing,
    silent_websockets_are_closed_and_answering_ones_stay,
    a_websocket_that_stops_reading_is_dropped_while_others_keep_receiving,
    per_ip_cap_refuses_only_the_extra_connections,
    total_cap_refuses_new_connections_and_keeps_the_open_ones,
    behind_a_trusted_proxy_the_per_ip_cap_uses_the_forwarded_address,
);
