//! Purgatory scenarios: server memory with 100k held events, and push authorization latency
//! with 1,000 held states for one identifier (in-process, the library call itself).

use std::sync::Arc;
use std::time::Instant;

use grasp_lib::authorization::PushDecision;
use grasp_lib::config::Config;
use grasp_lib::git::pktline::RefUpdate;
use grasp_lib::git::RepoRef;
use grasp_lib::nip34::RepoIdentifier;
use grasp_lib::store::StoreBackend;
use grasp_lib::Grasp;
use grasp_tests::events;
use grasp_tests::host_repository;
use grasp_tests::memory::rss;
use nostr_sdk::prelude::*;
use serde_json::json;

use crate::gitbench::main_state;
use crate::procs::grasp_server;
use crate::relaybench::ingest;
use crate::report::{Report, Row};
use crate::stats::{mib, secs, Samples};

fn oid(i: usize) -> String {
    format!("{:040x}", i as u128 * 0x9e37_79b9_7f4a_7c15 + 1)
}

/// Purgatory caps that hold every event these scenarios publish from one address, key set
/// and repository (the defaults keep one client to 200).
const ROOMY_PURGATORY: [&str; 8] = [
    "--purgatory-max-events-per-client=1000000",
    "--purgatory-max-bytes-per-client=68719476736",
    "--purgatory-max-events-per-pubkey=1000000",
    "--purgatory-max-bytes-per-pubkey=68719476736",
    "--purgatory-max-events-per-identifier=1000000",
    "--purgatory-max-bytes-per-identifier=68719476736",
    "--purgatory-max-events=1000000",
    "--purgatory-max-bytes=68719476736",
];

/// Server RSS after `held` pull requests whose commits never arrive are held.
pub async fn held_memory(report: &mut Report, held: usize) -> anyhow::Result<()> {
    let server = grasp_server(&ROOMY_PURGATORY);
    let client = server.client().await;
    let owner = Keys::generate();
    let coordinate = host_repository(&server, &client, &owner, "held", &[]).await;
    let url = server.clone_url(&owner.public_key(), "held");
    let authors: Vec<Keys> = (0..16).map(|_| Keys::generate()).collect();
    // Each PR names its own commit, so all of them are distinct.
    let signed: Vec<Arc<String>> = (0..held)
        .map(|i| {
            let pr = events::pull_request(&authors[i % authors.len()], &coordinate, &oid(i), &url);
            Arc::new(json!(["EVENT", events::json(&pr)]).to_string())
        })
        .collect();
    let idle = rss(server.pid());
    let (took, accepted) = ingest(&server.ws_url(), &signed).await?;
    anyhow::ensure!(accepted == held, "only {accepted} of {held} held");
    let after = rss(server.pid());
    let listed = server.purgatory_list().len();
    anyhow::ensure!(listed == held, "purgatory lists {listed}, expected {held}");
    report.add(Row {
        scenario: format!("server RSS with {held} held events"),
        ours: format!(
            "{} (idle {}; +{:.2} KiB per event)",
            mib(after as f64),
            mib(idle as f64),
            (after.saturating_sub(idle)) as f64 / held as f64 / 1024.0
        ),
        baseline: "—".into(),
        comparison: format!("held at {:.0} events/s (journaled)", held as f64 / took.as_secs_f64()),
        target: "reported".into(),
        met: None,
    });
    Ok(())
}

/// `authorize_push` latency for a push matching one of `states` held states.
pub async fn authorization_latency(report: &mut Report, states: usize, calls: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let domain = "bench.invalid";
    let config = Config {
        domain: Some(domain.into()),
        database_backend: StoreBackend::Memory,
        git_data_path: dir.path().to_path_buf(),
        events_per_minute: 0,
        // Every state comes from one key and one address.
        purgatory_max_events_per_client: states + 1,
        purgatory_max_events_per_pubkey: states + 1,
        ..Config::default()
    };
    let grasp = Grasp::open(config).await?;
    let mut session = grasp.relay().session("127.0.0.1".parse()?);
    let owner = Keys::generate();
    let ann = events::announcement(&owner, "many", domain, &[]);
    let publish = |ev: &Event| json!(["EVENT", events::json(ev)]).to_string();
    session.handle(&publish(&ann)).await;
    let base = Timestamp::now().as_secs() - states as u64;
    for i in 0..states {
        let state = main_state(&owner, "many", &oid(i), base + i as u64);
        let replies = session.handle(&publish(&state)).await;
        anyhow::ensure!(replies[0].contains("purgatory"), "state {i} not held: {replies:?}");
    }
    let repo = RepoRef::new(owner.public_key(), RepoIdentifier::new("many")?);
    let updates = [RefUpdate { old: "0".repeat(40), new: oid(states / 2), name: "refs/heads/main".into() }];
    let mut samples = Samples::default();
    for _ in 0..calls {
        let started = Instant::now();
        let decision = grasp.authorize_push(&repo, &updates, None).await?;
        samples.push_duration(started.elapsed());
        anyhow::ensure!(
            matches!(decision, PushDecision::Authorized { state: Some(_) }),
            "not authorized: {decision:?}"
        );
    }
    report.add(Row {
        scenario: format!("push authorization with {states} held states for one identifier"),
        ours: format!("p50 {}, p95 {}", secs(samples.median()), secs(samples.percentile(95.0))),
        baseline: "—".into(),
        comparison: format!("p50 {}", secs(samples.median())),
        target: "≤ 1 ms p50".into(),
        met: Some(samples.median() <= 0.001),
    });
    Ok(())
}
