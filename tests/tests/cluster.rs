//! Three grasp-server nodes on one PostgreSQL database and one repository directory, as
//! behind a load balancer: every node serves what any node took, a state sent to one node
//! authorizes a push through another, conflicting pushes through two nodes leave one
//! winner and a clean repository, a node killed mid-push loses nothing acknowledged, the
//! cluster hunts and expires each held event once, and only the leader syncs with relays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use grasp_tests::events;
use grasp_tests::git::{bare_refs, git, Workdir};
use grasp_tests::metrics::Exposition;
use grasp_tests::postgres::{admin_url, TestDatabase};
use grasp_tests::served::{publish_to as publish, wait_served};
use grasp_tests::{wait_until, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::json;

const D: &str = "shared";
const HELD: &str = "purgatory: won't be served until git data arrives";
const ALREADY_HELD: &str = "duplicate: already held; won't be served until git data arrives";
const LONG: Duration = Duration::from_secs(60);

/// Three nodes sharing `db` and one repository directory. They answer for one public
/// address, A's (what a load balancer in front would be): announcements list it, and each
/// node takes it as its own.
struct Cluster {
    // Fields drop in order: the nodes go before their repositories and their database.
    nodes: Vec<TestServer>,
    repos: tempfile::TempDir,
    db: TestDatabase,
}

impl Cluster {
    /// Starts the nodes of `test` on a database of their own, with `extra` options each and
    /// A with `a_env` in its environment (`None`, after saying why, without PostgreSQL).
    fn start(test: &str, extra: &[&str], a_env: &[(&str, &str)]) -> Option<Self> {
        let db = TestDatabase::create(&admin_url(test)?);
        let repos = tempfile::tempdir().expect("shared repository directory");
        let node = |domain: Option<&str>, env: &[(&str, &str)]| {
            let mut builder = TestServer::builder()
                .arg("--database-backend=postgres")
                .arg(format!("--database-url={}", db.url))
                .arg(format!("--git-data-path={}", repos.path().display()));
            if let Some(domain) = domain {
                builder = builder.arg(format!("--domain={domain}"));
            }
            for arg in extra {
                builder = builder.arg(*arg);
            }
            for (name, value) in env {
                builder = builder.env(name.to_string(), value.to_string());
            }
            builder.start()
        };
        let a = node(None, a_env);
        let domain = a.addr.clone();
        let (b, c) = (node(Some(&domain), &[]), node(Some(&domain), &[]));
        Some(Self { nodes: vec![a, b, c], repos, db })
    }

    fn repo(&self, owner: &PublicKey) -> PathBuf {
        self.repos.path().join(owner.to_bech32().unwrap()).join(format!("{D}.git"))
    }

    /// The ids `purgatory list` on `node` shows held.
    fn held_ids(node: &TestServer) -> Vec<String> {
        node.purgatory_list().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
    }

    /// The sum of a metric's samples over every node still running.
    async fn total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut sum = 0.0;
        for node in &self.nodes {
            let text = node.metrics().await;
            sum += Exposition::parse(&text)
                .samples_of(name)
                .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
                .map(|s| s.value)
                .sum::<f64>();
        }
        sum
    }
}

fn state(owner: &Keys, refs: &[(&str, &str)], offset: u64) -> Event {
    events::state_at(owner, D, refs, Some("main"), Timestamp::from(Timestamp::now().as_secs() + offset))
}

fn fsck(repo: &Path) {
    let out = git(repo, &["fsck", "--no-progress"]);
    assert!(out.status.success(), "fsck: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn three_nodes_serve_one_repository_and_its_events() {
    let Some(cluster) = Cluster::start("three_nodes_serve_one_repository_and_its_events", &[], &[]) else {
        return;
    };
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let owner = Keys::generate();

    // A live subscriber on C, before anything happens.
    let mut live = RawClient::connect(&c.ws_url()).await;
    assert_eq!(live.req("live", &[json!({"kinds": [30618], "limit": 0})]).await, Ok(vec![]));

    // Announcement and state to A; the push goes through B.
    let ann = events::announcement(&owner, D, &a.addr, &[]);
    assert!(publish(a, &ann).await.0);
    let work = Workdir::new();
    let c1 = work.commit("README", b"one");
    let s1 = state(&owner, &[("refs/heads/main", &c1)], 0);
    assert_eq!(publish(a, &s1).await, (true, HELD.to_owned()), "held on A");
    let listed = Cluster::held_ids(b);
    assert!(listed.contains(&s1.id.to_hex()), "B's view of purgatory holds it too: {listed:?}");
    work.ok(&["push", &b.clone_url(&owner.public_key(), D), "main"]);

    // Released by B's push: served by every node, and delivered live on C.
    for (name, node) in [("A", a), ("B", b), ("C", c)] {
        wait_served(node, &s1, &format!("the state is served by {name}")).await;
    }
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = live.try_recv(left).await.expect("the state reaches C's live subscriber");
        if message[0] == "EVENT" && message[2]["id"] == s1.id.to_hex() {
            break;
        }
    }
    assert_eq!(
        bare_refs(&cluster.repo(&owner.public_key())).0,
        vec![("refs/heads/main".to_owned(), c1.clone())]
    );
    let clone = Workdir::clone_from(&c.clone_url(&owner.public_key(), D), &[]);
    assert_eq!(clone.rev("HEAD"), c1, "C serves what B received");

    // Every node reports itself ready, under its own id.
    let mut ids = Vec::new();
    for node in [a, b, c] {
        let ready: serde_json::Value =
            reqwest::get(format!("{}/ready", node.http_url())).await.unwrap().json().await.unwrap();
        assert_eq!(
            (ready["ready"].as_bool(), ready["database"].as_str()),
            (Some(true), Some("ok")),
            "{ready}"
        );
        assert_eq!(ready["storage"], "ok", "{ready}");
        ids.push(ready["node"].as_str().unwrap().to_owned());
        let metrics = node.metrics().await;
        assert!(
            metrics.contains(&format!("grasp_node_info{{node=\"{}\"}} 1", ids.last().unwrap())),
            "{metrics}"
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct node ids");
}

#[tokio::test]
async fn conflicting_pushes_through_two_nodes_leave_one_winner() {
    let Some(cluster) = Cluster::start("conflicting_pushes_through_two_nodes_leave_one_winner", &[], &[])
    else {
        return;
    };
    let [a, b] = [&cluster.nodes[0], &cluster.nodes[1]];
    // Alice owns the repository and Bob maintains it with her (both announce, listing each
    // other); each publishes a state with a different `main`.
    let (alice, bob) = (Keys::generate(), Keys::generate());
    assert!(publish(a, &events::announcement(&alice, D, &a.addr, &[bob.public_key()])).await.0);
    assert!(publish(a, &events::announcement(&bob, D, &a.addr, &[alice.public_key()])).await.0);
    let url = |node: &TestServer| node.clone_url(&alice.public_key(), D);
    let base = Workdir::new();
    let c1 = base.commit("README", b"base");
    assert!(publish(a, &state(&alice, &[("refs/heads/main", &c1)], 0)).await.0);
    base.ok(&["push", &url(a), "main"]);
    let repo = cluster.repo(&alice.public_key());
    wait_until("main is at the base", LONG, || async {
        (bare_refs(&repo).0 == vec![("refs/heads/main".to_owned(), c1.clone())]).then_some(())
    })
    .await;

    let (mine, theirs) = (Workdir::clone_from(&url(a), &[]), Workdir::clone_from(&url(b), &[]));
    let c2 = mine.commit("alice", b"alice's change");
    let c3 = theirs.commit("bob", b"bob's change");
    assert!(publish(a, &state(&alice, &[("refs/heads/main", &c2)], 1)).await.0);
    assert!(publish(b, &state(&bob, &[("refs/heads/main", &c3)], 1)).await.0);

    // Both push at once, one through A and one through B, each from the base.
    let (url_a, url_b) = (url(a), url(b));
    let push_a = std::thread::spawn(move || git(mine.path(), &["push", &url_a, "main"]).status.success());
    let push_b = std::thread::spawn(move || git(theirs.path(), &["push", &url_b, "main"]).status.success());
    let (landed_a, landed_b) = (push_a.join().unwrap(), push_b.join().unwrap());
    assert!(landed_a != landed_b, "exactly one push lands (A: {landed_a}, B: {landed_b})");
    // The refused push's objects may have arrived all the same (git stores the pack before
    // it updates refs), and the git-data step then makes the repository follow the newest
    // state whose data is here: either way `main` is one of the two states' commits.
    let refs = bare_refs(&repo).0;
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert!(refs[0].0 == "refs/heads/main" && [&c2, &c3].contains(&&refs[0].1), "{refs:?}");
    fsck(&repo);
}

#[tokio::test]
async fn a_node_killed_mid_push_loses_nothing_and_another_node_finishes_the_job() {
    // A dies the first time a push gets to the end of receive-pack (as SIGKILL kills).
    let Some(mut cluster) = Cluster::start(
        "a_node_killed_mid_push_loses_nothing_and_another_node_finishes_the_job",
        &[],
        &[("FAILPOINTS", "push-while-receiving=return")],
    ) else {
        return;
    };
    let owner = Keys::generate();
    let ann = events::announcement(&owner, D, &cluster.nodes[0].addr, &[]);
    assert!(publish(&cluster.nodes[0], &ann).await.0);
    let issue = events::issue(&Keys::generate(), &events::coordinate(&owner.public_key(), D));
    assert!(publish(&cluster.nodes[0], &issue).await.0, "acknowledged by A");
    let work = Workdir::new();
    let c1 = work.commit("README", b"one");
    let s1 = state(&owner, &[("refs/heads/main", &c1)], 0);
    assert_eq!(publish(&cluster.nodes[0], &s1).await, (true, HELD.to_owned()));

    let through_a = git(work.path(), &["push", &cluster.nodes[0].clone_url(&owner.public_key(), D), "main"]);
    assert!(!through_a.status.success(), "the push through A dies with A");
    let deadline = std::time::Instant::now() + LONG;
    while !cluster.nodes[0].has_exited() {
        assert!(std::time::Instant::now() < deadline, "A did not die at the crash point");
        std::thread::sleep(Duration::from_millis(20));
    }

    // What A acknowledged is held (the announcement waits for its data, the issue for the
    // announcement) in the purgatory the other nodes share.
    let [b, c] = [&cluster.nodes[1], &cluster.nodes[2]];
    let held = Cluster::held_ids(c);
    for event in [&ann, &issue, &s1] {
        assert!(held.contains(&event.id.to_hex()), "held events survive A: {held:?}");
    }
    // B and C keep serving.
    let mut probe = RawClient::connect(&b.ws_url()).await;
    assert_eq!(probe.req("alive", &[json!({"kinds": [1], "limit": 1})]).await, Ok(vec![]));

    // The same push through C releases it.
    work.ok(&["push", &c.clone_url(&owner.public_key(), D), "main"]);
    for (event, what) in
        [(&s1, "the state"), (&ann, "the announcement"), (&issue, "the issue A acknowledged")]
    {
        wait_served(b, event, &format!("{what} is released and served by B")).await;
    }
    let repo = cluster.repo(&owner.public_key());
    assert_eq!(bare_refs(&repo).0, vec![("refs/heads/main".to_owned(), c1)]);
    fsck(&repo);
}

#[tokio::test]
async fn the_cluster_hunts_and_expires_each_held_event_once() {
    let Some(cluster) = Cluster::start(
        "the_cluster_hunts_and_expires_each_held_event_once",
        &["--purgatory-expiry-secs=4"],
        &[],
    ) else {
        return;
    };
    let nodes = &cluster.nodes;
    // The data is elsewhere: a server of its own, listed in the announcement too.
    let elsewhere = TestServer::start();
    let owner = Keys::generate();
    let clone_urls =
        [nodes[0].clone_url(&owner.public_key(), D), elsewhere.clone_url(&owner.public_key(), D)];
    let ann =
        events::announcement_with(&owner, D, &clone_urls, &[nodes[0].ws_url(), elsewhere.ws_url()], &[]);
    let work = Workdir::new();
    let c1 = work.commit("README", b"one");
    let s1 = state(&owner, &[("refs/heads/main", &c1)], 0);
    assert!(publish(&elsewhere, &ann).await.0);
    assert_eq!(publish(&elsewhere, &s1).await, (true, HELD.to_owned()));
    work.ok(&["push", &elsewhere.clone_url(&owner.public_key(), D), "main"]);
    wait_served(&elsewhere, &s1, "served where it was pushed").await;

    // Every node is told, as a client publishing to each would.
    for node in nodes {
        assert!(publish(node, &ann).await.0);
        let (ok, message) = publish(node, &s1).await;
        assert!(ok && (message == HELD || message == ALREADY_HELD), "{message}");
    }
    wait_served(&nodes[2], &s1, "released by hunting").await;
    wait_until("the fetch is counted", LONG, || async {
        (cluster.total("grasp_hunt_fetches_total", &[("result", "objects")]).await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        cluster.total("grasp_hunt_fetches_started_total", &[]).await,
        1.0,
        "fetched once, not three times"
    );

    // A state whose data never comes expires once, on one node.
    let s2 = state(&owner, &[("refs/heads/main", &"e".repeat(40))], 5);
    assert_eq!(publish(&nodes[1], &s2).await, (true, HELD.to_owned()));
    wait_until("the state expires", LONG, || async {
        (!Cluster::held_ids(&nodes[2]).contains(&s2.id.to_hex())).then_some(())
    })
    .await;
    wait_until("the expiry is counted", LONG, || async {
        (cluster.total("grasp_purgatory_expired_total", &[("type", "state")]).await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        cluster.total("grasp_purgatory_expired_total", &[("type", "state")]).await,
        1.0,
        "expired once"
    );
}

#[tokio::test]
async fn a_curation_reload_on_one_node_reloads_every_node() {
    let lists = tempfile::NamedTempFile::new().unwrap();
    let file = format!("--curation-file={}", lists.path().display());
    // A reload interval far beyond the test: only the signal can bring the change in.
    let Some(cluster) = Cluster::start(
        "a_curation_reload_on_one_node_reloads_every_node",
        &[&file, "--curation-reload-secs=3600"],
        &[],
    ) else {
        return;
    };
    let mallory = Keys::generate();
    let domain = cluster.nodes[0].addr.clone();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    // A new repository announcement each time (one listing the cluster is taken and held).
    let note = || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        events::announcement(&mallory, &format!("repo-{n}"), &domain, &[])
    };
    for node in &cluster.nodes {
        assert!(publish(node, &note()).await.0, "accepted before the list names mallory");
    }
    std::fs::write(lists.path(), format!("deny = [\"{}\"]\n", mallory.public_key().to_bech32().unwrap()))
        .unwrap();
    let hup = std::process::Command::new("kill").args(["-HUP", &cluster.nodes[0].pid().to_string()]).status();
    assert!(hup.unwrap().success());
    for (name, node) in ["A", "B", "C"].into_iter().zip(&cluster.nodes) {
        wait_until(&format!("{name} blocks mallory"), LONG, || async {
            let (ok, message) = publish(node, &note()).await;
            (!ok && message.starts_with("blocked:")).then_some(())
        })
        .await;
    }
}

/// Relay sync is the leader's job: one node syncs from the peer. When it loses the leader
/// lease (here the lease row is handed to a node that does not exist) it stops, and once
/// the lease is free again a node takes it and syncs again, reporting in the same series.
#[tokio::test]
async fn relay_sync_runs_on_the_leader_only_and_stops_when_the_lease_is_lost() {
    let peer = TestServer::builder().start();
    let bootstrap = format!("--sync-bootstrap-relays={}", peer.ws_url());
    let Some(cluster) = Cluster::start(
        "relay_sync_runs_on_the_leader_only_and_stops_when_the_lease_is_lost",
        &["--sync=true", &bootstrap],
        &[],
    ) else {
        return;
    };
    let syncing = || async { cluster.total("ngit_sync_relays_connected_total", &[]).await };
    wait_until("one node syncs from the peer", LONG, || async { (syncing().await == 1.0).then_some(()) })
        .await;

    cluster
        .db
        .execute("UPDATE grasp_leases SET holder = 'elsewhere', expires_at = now() + interval '1 hour'");
    wait_until("no node syncs once none holds the lease", LONG, || async {
        (syncing().await == 0.0).then_some(())
    })
    .await;
    assert!(
        cluster.nodes.iter().any(|n| n.log().contains("relay sync stopped")),
        "the leader says why it stopped"
    );

    cluster.db.execute("DELETE FROM grasp_leases");
    wait_until("a node takes the lease and syncs again", LONG, || async {
        (syncing().await == 1.0).then_some(())
    })
    .await;
}
