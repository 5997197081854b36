//! Relay scenarios: ingest rate of accepted layer-2 events (issues tagging a hosted
//! repository) from 8 concurrent websocket clients, and REQ latency of `#a` filters on a
//! store of 100k events. Each against grasp-server with its GRASP policy, the same server
//! with the policy switched off, and nostr-relay-builder 0.44 on LMDB without a policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use grasp_tests::events;
use grasp_tests::host_repository;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::procs::{grasp_server, RelayBuilderBaseline};
use crate::report::{Report, Row};
use crate::stats::{secs, Samples};

/// Concurrent publishing clients.
pub(crate) const CLIENTS: usize = 8;
/// EVENTs in flight per client.
const WINDOW: usize = 64;
/// Repositories the events tag.
pub(crate) const REPOS: usize = 10;

/// Publishes `events` over `CLIENTS` connections; returns (elapsed, accepted).
pub async fn ingest(url: &str, events: &[Arc<String>]) -> anyhow::Result<(Duration, usize)> {
    ingest_spread(&[url.to_owned()], events).await
}

/// [`ingest`] with the `CLIENTS` connections spread round-robin over the relays at `urls`
/// (the nodes of one deployment).
pub async fn ingest_spread(urls: &[String], events: &[Arc<String>]) -> anyhow::Result<(Duration, usize)> {
    let chunks: Vec<Vec<Arc<String>>> =
        events.chunks(events.len().div_ceil(CLIENTS)).map(|c| c.to_vec()).collect();
    let mut sockets = Vec::new();
    for (i, _) in chunks.iter().enumerate() {
        let url = &urls[i % urls.len()];
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, None, true).await.context("connect")?;
        sockets.push(ws);
    }
    let started = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .zip(chunks)
        .map(|(ws, chunk)| {
            tokio::spawn(async move {
                let (mut sink, mut stream) = ws.split();
                let window = Arc::new(Semaphore::new(WINDOW));
                let total = chunk.len();
                let writer = {
                    let window = window.clone();
                    tokio::spawn(async move {
                        for text in chunk {
                            window.acquire().await.expect("open").forget();
                            sink.send(Message::text(text.as_str())).await?;
                        }
                        Ok::<_, anyhow::Error>(sink)
                    })
                };
                let mut answered = 0;
                let mut accepted = 0;
                while answered < total {
                    let Some(msg) = stream.next().await else { anyhow::bail!("connection closed") };
                    if let Message::Text(text) = msg? {
                        let value: Value = serde_json::from_str(&text)?;
                        if value[0] == "OK" {
                            answered += 1;
                            // A duplicate would not measure anything: count only new events.
                            let fresh = !value[3].as_str().unwrap_or("").starts_with("duplicate:");
                            accepted += usize::from(value[2] == true && fresh);
                            window.add_permits(1);
                        }
                    }
                }
                let _sink = writer.await??;
                Ok::<_, anyhow::Error>(accepted)
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await??;
    }
    Ok((started.elapsed(), accepted))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One REQ → EOSE round trip for an `#a` filter; returns its latency.
async fn req_once(ws: &mut Socket, sub: &str, coordinate: &str) -> anyhow::Result<Duration> {
    let filter = json!({"kinds": [1621], "#a": [coordinate], "limit": 50});
    let started = Instant::now();
    ws.send(Message::text(json!(["REQ", sub, filter]).to_string())).await?;
    let mut events = 0;
    loop {
        let Some(msg) = ws.next().await else { anyhow::bail!("connection closed") };
        if let Message::Text(text) = msg? {
            let value: Value = serde_json::from_str(&text)?;
            match value[0].as_str() {
                Some("EVENT") => events += 1,
                Some("EOSE") => break,
                Some("CLOSED") => anyhow::bail!("REQ closed: {value}"),
                _ => {}
            }
        }
    }
    let took = started.elapsed();
    anyhow::ensure!(events == 50, "expected 50 events, got {events}");
    ws.send(Message::text(json!(["CLOSE", sub]).to_string())).await?;
    Ok(took)
}

/// REQ latencies on every target, queries interleaved so drift and noise hit all alike.
pub(crate) async fn req_latency(
    urls: &[String],
    coordinates: &[String],
    queries: usize,
) -> anyhow::Result<Vec<Samples>> {
    let mut sockets = Vec::new();
    for url in urls {
        // Nagle off on the client too, or every small REQ waits for a delayed ACK.
        sockets.push(tokio_tungstenite::connect_async_with_config(url, None, true).await?.0);
    }
    let mut samples = vec![Samples::default(); urls.len()];
    for i in 0..queries {
        for (ws, samples) in sockets.iter_mut().zip(samples.iter_mut()) {
            samples.push_duration(req_once(ws, &format!("q{i}"), &coordinates[i % coordinates.len()]).await?);
        }
    }
    Ok(samples)
}

/// `total` issues, each tagging one of `coordinates` (in turn), signed by 16 authors.
pub(crate) fn sign_issues(coordinates: &[String], total: usize) -> Vec<Arc<String>> {
    let authors: Vec<Keys> = (0..16).map(|_| Keys::generate()).collect();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let per = total.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (authors, coordinates) = (&authors, coordinates);
                scope.spawn(move || {
                    (t * per..((t + 1) * per).min(total))
                        .map(|i| {
                            // Distinct content: events signed in the same second must not collide.
                            let ev =
                                EventBuilder::new(Kind::Custom(1621), format!("issue {i}: it is broken"))
                                    .tags([
                                        Tag::parse(["a", &coordinates[i % coordinates.len()]]).expect("tag"),
                                        Tag::parse(["subject", "bug"]).expect("tag"),
                                    ])
                                    .sign_with_keys(&authors[i % authors.len()])
                                    .expect("sign");
                            Arc::new(json!(["EVENT", events::json(&ev)]).to_string())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("signing thread")).collect()
    })
}

/// Ingest and REQ latency on the three relays.
pub async fn relay(
    report: &mut Report,
    ingest_events: usize,
    store_events: usize,
    queries: usize,
) -> anyhow::Result<()> {
    // grasp-server with its policy needs hosted repositories to accept the issues.
    let grasp = grasp_server(&[]);
    let client = grasp.client().await;
    let mut coordinates = Vec::new();
    for i in 0..REPOS {
        coordinates.push(host_repository(&grasp, &client, &Keys::generate(), &format!("repo{i}"), &[]).await);
    }
    eprintln!("relay: signing {store_events} issues");
    let signed = sign_issues(&coordinates, store_events);
    let open = grasp_server(&["--event-policy=accept-all"]);
    let builder = RelayBuilderBaseline::start()?;
    let targets =
        [("grasp", grasp.ws_url()), ("policy off", open.ws_url()), ("relay-builder", builder.url.clone())];

    let mut rates = Vec::new();
    for (name, url) in &targets {
        let (took, accepted) = ingest(url, &signed[..ingest_events]).await?;
        anyhow::ensure!(accepted == ingest_events, "{name}: only {accepted} of {ingest_events} accepted");
        let rate = ingest_events as f64 / took.as_secs_f64();
        eprintln!("  {name}: {rate:.0} events/s");
        rates.push(rate);
    }
    for (name, url) in &targets {
        let (_, rest) = ingest(url, &signed[ingest_events..]).await?;
        anyhow::ensure!(rest == store_events - ingest_events, "{name}: preload incomplete");
    }
    let urls: Vec<String> = targets.iter().map(|(_, url)| url.clone()).collect();
    let latencies = req_latency(&urls, &coordinates, queries).await?;
    let ratio = rates[0] / rates[1];
    report.add(Row {
        scenario: format!("relay ingest, {ingest_events} issues from {CLIENTS} clients"),
        ours: format!("{:.0} events/s", rates[0]),
        baseline: format!("policy off {:.0}/s; relay-builder {:.0}/s", rates[1], rates[2]),
        comparison: format!("{ratio:.2}× policy off, {:.2}× relay-builder", rates[0] / rates[2]),
        target: "≥ 0.8× policy off".into(),
        met: Some(ratio >= 0.8),
    });
    report.add(Row {
        scenario: format!("REQ #a latency, limit 50, store of {store_events} events"),
        ours: format!("p50 {}, p95 {}", secs(latencies[0].median()), secs(latencies[0].percentile(95.0))),
        baseline: format!(
            "policy off p50 {}; relay-builder p50 {}",
            secs(latencies[1].median()),
            secs(latencies[2].median())
        ),
        comparison: format!(
            "{:.2}× policy off, {:.2}× relay-builder",
            latencies[0].median() / latencies[1].median(),
            latencies[0].median() / latencies[2].median()
        ),
        target: "reported".into(),
        met: None,
    });
    Ok(())
}
