//! Soak: mixed traffic for a long time (default 10 minutes) against one server, to see
//! whether memory, descriptors and latency stay flat.
//!
//! Traffic, all at once:
//! - `subscribers` websocket clients (default 1,000) with a live subscription to issues;
//!   each delivery's latency is measured from the publish time written in the event;
//! - one publisher sending issues at a steady rate (each fans out to every subscriber);
//! - REQ load: clients asking for the newest issues, back to back with a short pause;
//! - a clone loop (a fresh `git clone` of a hosted repository) and a push loop (a state
//!   event, then `git push` of a new commit), each with a pause between operations.
//!
//! Every window (default 30 s) the server's RSS and open descriptors are read from /proc and
//! the latencies of the window are summarised (p50/p95/p99).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use grasp_tests::git::{git, Workdir};
use grasp_tests::host_repository;
use grasp_tests::memory::{rss, status_field};
use grasp_tests::procfs::open_fds;
use nostr_sdk::prelude::*;
use tokio_tungstenite::tungstenite::Message;

use crate::gitbench::main_state;
use crate::procs::grasp_server;
use crate::report::{Report, Row};
use crate::stats::{mib, secs, Samples};

/// How hard the soak pushes.
#[derive(Debug, Clone, Copy)]
pub struct SoakPlan {
    /// How long it runs.
    pub duration: Duration,
    /// Websocket subscribers with a live subscription.
    pub subscribers: usize,
    /// Issues published per second (each delivered to every subscriber).
    pub events_per_sec: u64,
    /// Length of one reporting window.
    pub window: Duration,
}

/// Latency samples of the current window, by operation.
#[derive(Default)]
struct Window {
    samples: Mutex<HashMap<&'static str, Samples>>,
    failures: Mutex<HashMap<&'static str, u64>>,
}

impl Window {
    fn record(&self, op: &'static str, took: Duration) {
        self.samples.lock().unwrap().entry(op).or_default().push_duration(took);
    }

    fn fail(&self, op: &'static str) {
        *self.failures.lock().unwrap().entry(op).or_default() += 1;
    }

    fn take(&self) -> (HashMap<&'static str, Samples>, HashMap<&'static str, u64>) {
        (
            std::mem::take(&mut *self.samples.lock().unwrap()),
            std::mem::take(&mut *self.failures.lock().unwrap()),
        )
    }
}

fn pcts(samples: Option<&Samples>) -> String {
    match samples {
        Some(s) if !s.0.is_empty() => format!(
            "{} / {} / {} (n={})",
            secs(s.percentile(50.0)),
            secs(s.percentile(95.0)),
            secs(s.percentile(99.0)),
            s.0.len()
        ),
        _ => "—".to_owned(),
    }
}

/// Runs the soak and returns the time series as a Markdown table; the report gets rows for
/// growth of RSS and descriptors.
pub async fn soak(report: &mut Report, plan: SoakPlan) -> anyhow::Result<String> {
    if let Some(limit) = grasp_lib::limits::raise_nofile_limit() {
        eprintln!("  bench open-file limit: {} (was {})", limit.soft, limit.soft_before);
    }
    let server = grasp_server(&["--max-connections=20000", "--max-connections-per-ip=0"]);
    let pid = server.pid();
    let ws_url = server.ws_url();
    let started = Instant::now();
    let window = Arc::new(Window::default());
    let stop = Arc::new(AtomicBool::new(false));

    // Repositories to clone and push to.
    let client = server.client().await;
    let mut repos = Vec::new();
    for i in 0..4 {
        let owner = Keys::generate();
        let identifier = format!("soak{i}");
        let coordinate = host_repository(&server, &client, &owner, &identifier, &[]).await;
        let url = server.clone_url(&owner.public_key(), &identifier);
        let work = Workdir::clone_from(&url, &[]);
        repos.push((owner, identifier, coordinate, url, work));
    }
    client.disconnect().await;
    let coordinates: Vec<String> = repos.iter().map(|r| r.2.clone()).collect();

    // Subscribers.
    eprintln!("  connecting {} subscribers", plan.subscribers);
    let delivered = Arc::new(AtomicU64::new(0));
    let mut subscriber_tasks = Vec::new();
    for i in 0..plan.subscribers {
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await?;
        let req = serde_json::json!(["REQ", format!("live{i}"), {"kinds": [1621], "limit": 0}]);
        ws.send(Message::text(req.to_string())).await?;
        let (window, delivered) = (window.clone(), delivered.clone());
        subscriber_tasks.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                if value[0] != "EVENT" {
                    continue;
                }
                let sent_ns = value[2]["content"].as_str().and_then(|c| c.parse::<u128>().ok());
                if let Some(sent_ns) = sent_ns {
                    let now_ns = started.elapsed().as_nanos();
                    window
                        .record("live delivery", Duration::from_nanos(now_ns.saturating_sub(sent_ns) as u64));
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let mut tasks = Vec::new();
    // Publisher: issues whose content is the publish time (ns since the start).
    let published = Arc::new(AtomicU64::new(0));
    {
        let (ws_url, window, stop, published) =
            (ws_url.clone(), window.clone(), stop.clone(), published.clone());
        let coordinates = coordinates.clone();
        let every = Duration::from_nanos(1_000_000_000 / plan.events_per_sec.max(1));
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("publisher connects");
            let keys = Keys::generate();
            let mut tick = tokio::time::interval(every);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let content = started.elapsed().as_nanos().to_string();
                let tags = [Tag::parse(["a", coordinates[n % coordinates.len()].as_str()]).expect("tag")];
                let event = EventBuilder::new(Kind::Custom(1621), content)
                    .tags(tags)
                    .sign_with_keys(&keys)
                    .expect("sign");
                let t = Instant::now();
                if ws.send(Message::text(serde_json::json!(["EVENT", event]).to_string())).await.is_err() {
                    window.fail("publish");
                    continue;
                }
                // The OK comes back on the same connection.
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(text))) if text.starts_with("[\"OK\"") => {
                            if text.contains("true") {
                                window.record("publish", t.elapsed());
                                published.fetch_add(1, Ordering::Relaxed);
                            } else {
                                window.fail("publish");
                            }
                            break;
                        }
                        Some(Ok(_)) => continue,
                        _ => {
                            window.fail("publish");
                            break;
                        }
                    }
                }
            }
        }));
    }
    // REQ load: four clients, each a REQ every 200 ms.
    for c in 0..4 {
        let (ws_url, window, stop) = (ws_url.clone(), window.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("REQ client connects");
            let mut q = 0u64;
            while !stop.load(Ordering::Relaxed) {
                q += 1;
                let sub = format!("q{c}-{q}");
                let req = serde_json::json!(["REQ", sub, {"kinds": [1621], "limit": 100}]);
                let t = Instant::now();
                if ws.send(Message::text(req.to_string())).await.is_err() {
                    window.fail("REQ");
                    break;
                }
                let eose = format!("[\"EOSE\",\"{sub}\"]");
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(text))) if text.as_str() == eose => break,
                        Some(Ok(_)) => continue,
                        _ => {
                            window.fail("REQ");
                            return;
                        }
                    }
                }
                window.record("REQ", t.elapsed());
                let _ = ws.send(Message::text(serde_json::json!(["CLOSE", sub]).to_string())).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Clone loop: one clone, then a second's pause.
    {
        let urls: Vec<String> = repos.iter().map(|r| r.3.clone()).collect();
        let (window, stop) = (window.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let url = urls[n % urls.len()].clone();
                let t = Instant::now();
                let ok = tokio::task::spawn_blocking(move || {
                    let dir = tempfile::tempdir().expect("temp dir");
                    git(dir.path(), &["clone", "-q", "--no-checkout", &url, "c"]).status.success()
                })
                .await
                .unwrap_or(false);
                if ok {
                    window.record("clone", t.elapsed());
                } else {
                    window.fail("clone");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    // Push loop: a state, then the push, then two seconds' pause.
    let push_task = {
        let (ws_url, window, stop) = (ws_url.clone(), window.clone(), stop.clone());
        tokio::spawn(async move {
            let mut clock = Timestamp::now().as_secs() + 1;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (owner, identifier, _, url, work) = &repos[n % repos.len()];
                let commit = work.commit("soak.txt", format!("push {n}").as_bytes());
                clock += 1;
                let state = main_state(owner, identifier, &commit, clock.max(Timestamp::now().as_secs()));
                let t = Instant::now();
                let accepted = async {
                    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.ok()?;
                    ws.send(Message::text(serde_json::json!(["EVENT", state]).to_string())).await.ok()?;
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Text(text) = msg {
                            if text.starts_with("[\"OK\"") {
                                return Some(text.contains("true"));
                            }
                        }
                    }
                    None
                }
                .await;
                let dir = work.path().to_path_buf();
                let url = url.clone();
                let pushed = accepted == Some(true)
                    && tokio::task::spawn_blocking(move || {
                        git(&dir, &["push", "-q", &url, "main"]).status.success()
                    })
                    .await
                    .unwrap_or(false);
                if pushed {
                    window.record("push", t.elapsed());
                } else {
                    window.fail("push");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    // Sampling.
    let mut table = String::from(
        "| t | RSS (anon + file) | open fds | live delivery p50 / p95 / p99 | REQ p50 / p95 / p99 | clone p50 / p95 / p99 | push p50 / p95 / p99 | publish p50 / p95 / p99 | delivered / expected | failures |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut rss_series = Vec::new();
    let mut anon_series = Vec::new();
    let mut fd_series = Vec::new();
    let mut last_published = 0u64;
    let mut last_delivered = 0u64;
    let soak_start = Instant::now();
    while soak_start.elapsed() < plan.duration {
        tokio::time::sleep(plan.window).await;
        let (samples, failures) = window.take();
        let (memory, fds) = (rss(pid) as f64, open_fds(pid));
        let anon = status_field(pid, "RssAnon") as f64;
        let file = status_field(pid, "RssFile") as f64;
        rss_series.push(memory);
        anon_series.push(anon);
        fd_series.push(fds);
        let now_published = published.load(Ordering::Relaxed);
        let now_delivered = delivered.load(Ordering::Relaxed);
        let expected = (now_published - last_published) * plan.subscribers as u64;
        let got = now_delivered - last_delivered;
        (last_published, last_delivered) = (now_published, now_delivered);
        let mut failed: Vec<String> = failures.iter().map(|(op, n)| format!("{op} {n}")).collect();
        failed.sort();
        let line = format!(
            "| {} s | {} ({} + {}) | {} | {} | {} | {} | {} | {} | {} / {} | {} |\n",
            soak_start.elapsed().as_secs(),
            mib(memory),
            mib(anon),
            mib(file),
            fds,
            pcts(samples.get("live delivery")),
            pcts(samples.get("REQ")),
            pcts(samples.get("clone")),
            pcts(samples.get("push")),
            pcts(samples.get("publish")),
            got,
            expected,
            if failed.is_empty() { "none".to_owned() } else { failed.join(", ") }
        );
        eprint!("  {line}");
        table.push_str(&line);
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    let _ = push_task.await;
    // Every published event reaches every subscriber (give the last ones a moment).
    let expected = published.load(Ordering::Relaxed) * plan.subscribers as u64;
    let settle = Instant::now();
    while delivered.load(Ordering::Relaxed) < expected && settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = delivered.load(Ordering::Relaxed);
    for task in subscriber_tasks {
        task.abort();
    }
    report.add(Row {
        scenario: "soak: live deliveries".into(),
        ours: format!("{got} of {expected}"),
        baseline: "—".into(),
        comparison: format!("{} missing", expected.saturating_sub(got)),
        target: "none missing".into(),
        met: Some(got >= expected),
    });

    // Flat: the last window against the second (the first includes warm-up).
    let base = rss_series.get(1).or(rss_series.first()).copied().unwrap_or(f64::NAN);
    let last = rss_series.last().copied().unwrap_or(f64::NAN);
    let max = rss_series.iter().copied().fold(f64::NAN, f64::max);
    report.add(Row {
        scenario: format!(
            "soak {} min: {} subscribers, {} events/s, REQ, clone and push loops",
            plan.duration.as_secs() / 60,
            plan.subscribers,
            plan.events_per_sec
        ),
        ours: format!("RSS {} → {} (max {})", mib(base), mib(last), mib(max)),
        baseline: "—".into(),
        comparison: format!("{:+.1}% RSS", (last - base) / base * 100.0),
        target: "flat".into(),
        met: None,
    });
    let anon_base = anon_series.get(1).or(anon_series.first()).copied().unwrap_or(f64::NAN);
    let anon_last = anon_series.last().copied().unwrap_or(f64::NAN);
    report.add(Row {
        scenario: "soak: anonymous memory (heap), without mapped files".into(),
        ours: format!("{} → {}", mib(anon_base), mib(anon_last)),
        baseline: "—".into(),
        comparison: format!("{:+.1}%", (anon_last - anon_base) / anon_base * 100.0),
        target: "flat".into(),
        met: None,
    });
    let fd_base = fd_series.get(1).or(fd_series.first()).copied().unwrap_or(0);
    let fd_last = fd_series.last().copied().unwrap_or(0);
    report.add(Row {
        scenario: "soak: open descriptors".into(),
        ours: format!("{fd_base} → {fd_last} (max {})", fd_series.iter().max().copied().unwrap_or(0)),
        baseline: "—".into(),
        comparison: format!("{:+}", fd_last as i64 - fd_base as i64),
        target: "flat".into(),
        met: None,
    });
    drop(server);
    Ok(table)
}
