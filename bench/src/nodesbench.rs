//! The `nodes` scenario: what the PostgreSQL event store costs, and what several nodes on
//! it give, in one run against its own throw-away PostgreSQL ([`Postgres`]).
//!
//! 1. One grasp-server on PostgreSQL against the same server on its default LMDB store:
//!    relay ingest and REQ latency, measured as in the `relay` scenario.
//! 2. Clusters of 1, 2 and 3 grasp-server nodes sharing one PostgreSQL database and one
//!    repository directory (each node with its own relay data directory), clients spread
//!    round-robin over the nodes: small-push latency and relay ingest, each relative to the
//!    1-node cluster.
//!
//! Every measurement gets a database of its own. The announcement and state a push needs
//! are published to the node the push goes through, so the push measures one node's path
//! (purgatory is shared, so any node would do; `tests/tests/cluster.rs` checks that).

use anyhow::Context;
use grasp_tests::events;
use grasp_tests::git::Workdir;
use grasp_tests::postgres::TestDatabase;
use grasp_tests::{host_repository, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::Value;
use tempfile::TempDir;

use crate::gitbench::{main_state, run_git};
use crate::pg::Postgres;
use crate::procs::grasp_server;
use crate::relaybench::{ingest, ingest_spread, req_latency, sign_issues, CLIENTS, REPOS};
use crate::report::{Report, Row};
use crate::stats::{secs, Samples};

/// How much one run does.
pub struct NodesPlan {
    /// Issues published in each ingest measurement.
    pub ingest_events: usize,
    /// Issues stored before the REQ latency is measured.
    pub store_events: usize,
    /// REQs per backend.
    pub queries: usize,
    /// Measured pushes per cluster (after one warm-up push through each node).
    pub pushes: usize,
}

/// The host every node of a cluster serves under, as behind one load balancer:
/// announcements list it, so each node takes the cluster's repositories as its own.
/// (A loopback address no node listens on: nothing is ever dialed for it.)
const DOMAIN: &str = "127.0.0.1:9";

/// Cluster sizes measured; the first is the reference the others are compared with.
const SIZES: [usize; 3] = [1, 2, 3];

/// Runs both parts of the scenario.
pub async fn nodes(report: &mut Report, plan: NodesPlan) -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    eprintln!("nodes: {} at {}", pg.version, pg.admin_url);
    backends(report, &pg, &plan).await?;

    let mut pushes = Vec::new();
    let mut rates = Vec::new();
    for n in SIZES {
        let cluster = Cluster::start(&pg, n)?;
        let samples =
            cluster.push_latencies(plan.pushes).await.with_context(|| format!("{n}-node pushes"))?;
        let rate =
            cluster.ingest_rate(plan.ingest_events).await.with_context(|| format!("{n}-node ingest"))?;
        eprintln!("  {n} node(s): push p50 {}, ingest {rate:.0} events/s", secs(samples.median()));
        pushes.push(samples);
        rates.push(rate);
    }
    let (one_push, one_rate) = (&pushes[0], rates[0]);
    for (i, n) in SIZES.iter().enumerate().skip(1) {
        let ratio = pushes[i].median() / one_push.median();
        report.add(Row {
            scenario: format!(
                "small push latency, {n} nodes on one PostgreSQL and repository directory \
                 ({} pushes round-robin)",
                plan.pushes
            ),
            ours: format!("p50 {}, p95 {}", secs(pushes[i].median()), secs(pushes[i].percentile(95.0))),
            baseline: format!(
                "1 node p50 {}, p95 {}",
                secs(one_push.median()),
                secs(one_push.percentile(95.0))
            ),
            comparison: format!("{ratio:.2}× 1 node (p50)"),
            target: "reported".into(),
            met: None,
        });
    }
    for (i, n) in SIZES.iter().enumerate().skip(1) {
        report.add(Row {
            scenario: format!(
                "relay ingest, {n} nodes on one PostgreSQL, {} issues from {CLIENTS} clients round-robin",
                plan.ingest_events
            ),
            ours: format!("{:.0} events/s", rates[i]),
            baseline: format!("1 node {one_rate:.0}/s"),
            comparison: format!("{:.2}× 1 node", rates[i] / one_rate),
            target: "reported".into(),
            met: None,
        });
    }
    Ok(())
}

/// One node on PostgreSQL against one on LMDB: ingest of the same issues, then REQ latency
/// on a store of `store_events`, the queries interleaved so noise hits both alike.
async fn backends(report: &mut Report, pg: &Postgres, plan: &NodesPlan) -> anyhow::Result<()> {
    let database = pg.database();
    let on_pg = grasp_server(&["--database-backend=postgres", &format!("--database-url={}", database.url)]);
    let on_lmdb = grasp_server(&["--database-backend=lmdb"]);
    // The same owners and identifiers on both: the same coordinates, so both accept the
    // same signed issues.
    let owners: Vec<Keys> = (0..REPOS).map(|_| Keys::generate()).collect();
    let mut coordinates = Vec::new();
    for server in [&on_pg, &on_lmdb] {
        let client = server.client().await;
        coordinates.clear();
        for (i, owner) in owners.iter().enumerate() {
            coordinates.push(host_repository(server, &client, owner, &format!("repo{i}"), &[]).await);
        }
    }
    eprintln!("nodes: signing {} issues", plan.store_events);
    let signed = sign_issues(&coordinates, plan.store_events);
    let targets = [("PostgreSQL", on_pg.ws_url()), ("LMDB", on_lmdb.ws_url())];
    let mut rates = Vec::new();
    for (name, url) in &targets {
        let (took, accepted) = ingest(url, &signed[..plan.ingest_events]).await?;
        anyhow::ensure!(
            accepted == plan.ingest_events,
            "{name}: only {accepted} of {} accepted",
            plan.ingest_events
        );
        let rate = plan.ingest_events as f64 / took.as_secs_f64();
        eprintln!("  {name}: {rate:.0} events/s");
        rates.push(rate);
    }
    for (name, url) in &targets {
        let (_, rest) = ingest(url, &signed[plan.ingest_events..]).await?;
        anyhow::ensure!(rest == plan.store_events - plan.ingest_events, "{name}: preload incomplete");
    }
    let urls: Vec<String> = targets.iter().map(|(_, url)| url.clone()).collect();
    let latencies = req_latency(&urls, &coordinates, plan.queries).await?;
    let (on_pg, on_lmdb) = (&latencies[0], &latencies[1]);
    report.add(Row {
        scenario: format!(
            "relay ingest on PostgreSQL, 1 node, {} issues from {CLIENTS} clients",
            plan.ingest_events
        ),
        ours: format!("{:.0} events/s", rates[0]),
        baseline: format!("LMDB {:.0}/s", rates[1]),
        comparison: format!("{:.2}× LMDB", rates[0] / rates[1]),
        target: "reported".into(),
        met: None,
    });
    report.add(Row {
        scenario: format!("REQ #a latency on PostgreSQL, limit 50, store of {} events", plan.store_events),
        ours: format!("p50 {}, p95 {}", secs(on_pg.median()), secs(on_pg.percentile(95.0))),
        baseline: format!("LMDB p50 {}, p95 {}", secs(on_lmdb.median()), secs(on_lmdb.percentile(95.0))),
        comparison: format!("{:.2}× LMDB (p50)", on_pg.median() / on_lmdb.median()),
        target: "reported".into(),
        met: None,
    });
    Ok(())
}

/// `n` grasp-server nodes on one PostgreSQL database and one repository directory, all
/// serving [`DOMAIN`]; each keeps its own relay data directory (purgatory, LMDB leftovers).
struct Cluster {
    // Fields drop in order: the nodes go before their database and repositories.
    nodes: Vec<TestServer>,
    _database: TestDatabase,
    _repos: TempDir,
}

impl Cluster {
    fn start(pg: &Postgres, n: usize) -> anyhow::Result<Self> {
        let database = pg.database();
        let repos = tempfile::tempdir()?;
        let args = [
            "--database-backend=postgres".to_owned(),
            format!("--database-url={}", database.url),
            // Overrides the per-node directory the harness gives.
            format!("--git-data-path={}", repos.path().display()),
            format!("--domain={DOMAIN}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let nodes = (0..n).map(|_| grasp_server(&args)).collect();
        Ok(Self { nodes, _database: database, _repos: repos })
    }

    /// Makes `identifier` of a new owner a served repository through node `node`: its
    /// announcement and a state there, then the push that releases both. Returns its
    /// coordinate.
    async fn host(&self, node: usize, identifier: &str) -> anyhow::Result<String> {
        let server = &self.nodes[node];
        let owner = Keys::generate();
        let mut raw = RawClient::connect(&server.ws_url()).await;
        publish_ok(&mut raw, &announcement(&owner, identifier)).await?;
        let work = Workdir::new();
        let commit = work.commit("README", identifier.as_bytes());
        let state = events::state(&owner, identifier, &[("refs/heads/main", &commit)], Some("main"));
        publish_ok(&mut raw, &events::json(&state)).await?;
        run_git(work.path(), &["push", "-q", &server.clone_url(&owner.public_key(), identifier), "main"])
            .with_context(|| format!("hosting {identifier} through node {node}"))?;
        Ok(events::coordinate(&owner.public_key(), identifier))
    }

    /// Small pushes to one repository, push `i` through node `i mod n`, each after a state
    /// published to that node; the first push through each node is its warm-up.
    async fn push_latencies(&self, pushes: usize) -> anyhow::Result<Samples> {
        let n = self.nodes.len();
        let owner = Keys::generate();
        let mut clients = Vec::new();
        for node in &self.nodes {
            clients.push(RawClient::connect(&node.ws_url()).await);
        }
        let work = Workdir::new();
        let mut samples = Samples::default();
        let base = Timestamp::now().as_secs();
        for i in 0..n + pushes {
            let k = i % n;
            if i < n {
                // Already stored after the first push; this node answers it as a duplicate.
                publish_ok(&mut clients[k], &announcement(&owner, "small"))
                    .await
                    .with_context(|| format!("announcement to node {k}"))?;
            }
            let commit = work.commit("file.txt", format!("change {i}\n").as_bytes());
            let state = main_state(&owner, "small", &commit, base + i as u64 + 1);
            publish_ok(&mut clients[k], &events::json(&state))
                .await
                .with_context(|| format!("state {i} to node {k}"))?;
            let url = self.nodes[k].clone_url(&owner.public_key(), "small");
            let took = run_git(work.path(), &["push", "-q", &url, "main"])
                .with_context(|| format!("push {i} through node {k} of {n}"))?;
            if i >= n {
                samples.push_duration(took);
            }
        }
        Ok(samples)
    }

    /// Ingest rate of `count` issues tagging repositories hosted through every node, the
    /// client connections spread over the nodes.
    async fn ingest_rate(&self, count: usize) -> anyhow::Result<f64> {
        let mut coordinates = Vec::new();
        for r in 0..REPOS {
            coordinates.push(self.host(r % self.nodes.len(), &format!("repo{r}")).await?);
        }
        let signed = sign_issues(&coordinates, count);
        let urls: Vec<String> = self.nodes.iter().map(TestServer::ws_url).collect();
        let (took, accepted) = ingest_spread(&urls, &signed).await?;
        anyhow::ensure!(accepted == count, "only {accepted} of {count} issues accepted");
        Ok(count as f64 / took.as_secs_f64())
    }
}

/// An announcement listing the cluster's [`DOMAIN`] as clone URL and relay.
fn announcement(owner: &Keys, identifier: &str) -> Value {
    let npub = owner.public_key().to_bech32().expect("npub");
    events::json(&events::announcement_with(
        owner,
        identifier,
        &[format!("http://{DOMAIN}/{npub}/{identifier}.git")],
        &[format!("ws://{DOMAIN}")],
        &[],
    ))
}

/// Publishes `event` and waits for the node's `OK`; fails when it refuses.
async fn publish_ok(raw: &mut RawClient, event: &Value) -> anyhow::Result<()> {
    let (ok, message) = raw.publish(event).await;
    anyhow::ensure!(ok, "refused: {message}");
    Ok(())
}
