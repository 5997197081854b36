//! Helpers for relay sync tests: several servers on 127.0.0.1 that know each other's URL,
//! a repository announced on several of them, and polls on events and metrics.
//!
//! Servers whose URL must appear in an announcement before they start get a port reserved
//! up front ([`free_port`]) and are started (and restarted) on it.

use std::time::Duration;

use nostr_sdk::prelude::*;
use serde_json::json;

use crate::events;
use crate::git::Workdir;
use crate::metrics::Exposition;
use crate::{wait_until, RawClient, TestServer, TestServerBuilder};

/// How long sync tests wait for something that should happen (machines are loaded).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `127.0.0.1:<port>`
pub fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// A builder for a server on `port` that syncs from `bootstrap` (relay URLs).
pub fn syncing(port: u16, bootstrap: &[String]) -> TestServerBuilder {
    let mut builder = TestServer::builder().arg(format!("--bind-address={}", addr(port))).arg("--sync=true");
    if !bootstrap.is_empty() {
        builder = builder.arg(format!("--sync-bootstrap-relays={}", bootstrap.join(",")));
    }
    builder
}

/// A builder for a server on `port` with relay sync off (the harness default).
pub fn not_syncing(port: u16) -> TestServerBuilder {
    TestServer::builder().arg(format!("--bind-address={}", addr(port)))
}

/// A repository whose announcement lists several servers, with one commit to push.
pub struct Repo {
    /// The owner.
    pub owner: Keys,
    /// The `d` tag.
    pub identifier: String,
    /// `30617:<owner>:<d>`
    pub coordinate: String,
    /// The announcement (lists every server given to [`Repo::new`]).
    pub announcement: Event,
    /// A state naming the commit of `work`.
    pub state: Event,
    /// A working repository with that commit.
    pub work: Workdir,
}

impl Repo {
    /// A repository announced on the servers at `addrs` (`127.0.0.1:<port>` each).
    pub fn new(identifier: &str, addrs: &[String]) -> Self {
        let owner = Keys::generate();
        let npub = owner.public_key().to_bech32().expect("npub");
        let clone: Vec<String> =
            addrs.iter().map(|a| format!("http://{a}/{npub}/{identifier}.git")).collect();
        let relays: Vec<String> = addrs.iter().map(|a| format!("ws://{a}")).collect();
        let announcement = events::announcement_with(&owner, identifier, &clone, &relays, &[]);
        let work = Workdir::new();
        let commit = work.commit("README", identifier.as_bytes());
        let state = events::state(&owner, identifier, &[("refs/heads/main", &commit)], Some("main"));
        let coordinate = events::coordinate(&owner.public_key(), identifier);
        Self { owner, identifier: identifier.to_owned(), coordinate, announcement, state, work }
    }

    /// Publishes the announcement and state to `server` and pushes the commit: the
    /// repository is served there.
    pub async fn host_on(&self, server: &TestServer) {
        publish(server, &self.announcement).await.expect("announcement accepted");
        publish(server, &self.state).await.expect("state accepted");
        self.push_to(server);
        wait_for_event(server, &self.state, "the state served after the push").await;
    }

    /// Pushes the commit to `server` (which must hold an authorizing state).
    pub fn push_to(&self, server: &TestServer) {
        self.work.ok(&["push", &server.clone_url(&self.owner.public_key(), &self.identifier), "main"]);
    }

    /// Waits until `server` holds this repository's state in purgatory (synced, no data;
    /// with hunting on, the hold may be too short to see).
    pub async fn wait_held_on(&self, server: &TestServer) {
        let id = self.state.id.to_hex();
        wait_until("the synced state held in purgatory", PATIENCE, || async {
            server.purgatory_list().iter().any(|e| e["event_id"] == id).then_some(())
        })
        .await;
    }
}

/// Publishes over a raw websocket; `Err` carries the `OK false` message.
pub async fn publish(server: &TestServer, event: &Event) -> Result<String, String> {
    let mut raw = RawClient::connect(&server.ws_url()).await;
    match raw.publish(&events::json(event)).await {
        (true, message) => Ok(message),
        (false, message) => Err(message),
    }
}

/// True when `server` serves `event`.
pub async fn serves(server: &TestServer, event: &Event) -> bool {
    let mut raw = RawClient::connect(&server.ws_url()).await;
    !raw.req("has", &[json!({"ids": [event.id.to_hex()]})]).await.expect("REQ answered").is_empty()
}

/// Waits until `server` serves `event`.
pub async fn wait_for_event(server: &TestServer, event: &Event, what: &str) {
    wait_until(what, PATIENCE, || async { serves(server, event).await.then_some(()) }).await;
}

/// `k="v"` label matchers as (name, value) pairs.
fn label_pairs<'a>(labels: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    labels
        .iter()
        .map(|l| {
            let (k, v) = l.split_once("=\"").unwrap_or_else(|| panic!("label matcher {l} is not k=\"v\""));
            (k, v.strip_suffix('"').unwrap_or(v))
        })
        .collect()
}

/// The value of one series in Prometheus text, written as rendered, e.g.
/// `ngit_sync_relay_connected{relay="ws://127.0.0.1:7000"}`; `None` when absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            (name, rest.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect())
        }
        None => (series, Vec::new()),
    };
    let wanted = label_pairs(&labels);
    Exposition::parse(text)
        .samples_of(name)
        .find(|s| {
            s.labels.len() == wanted.len()
                && wanted.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// The sum of every series of `name` whose labels include all of `labels` (`k="v"` each).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    let wanted = label_pairs(labels);
    Exposition::parse(text)
        .samples_of(name)
        .filter(|s| wanted.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// Waits until `check` holds for the metrics text of `server`; returns that text.
pub async fn wait_metrics(server: &TestServer, what: &str, check: impl Fn(&str) -> bool) -> String {
    wait_until(what, PATIENCE, || async {
        let text = server.metrics().await;
        check(&text).then_some(text)
    })
    .await
}

/// `relay="ws://127.0.0.1:<port>"`: the label of a bootstrap peer (one the operator
/// configured).
pub fn relay_label(port: u16) -> String {
    format!("relay=\"ws://{}\"", addr(port))
}

/// The label every peer learned from an announcement shares: no series names a URL taken
/// from an event.
pub const DISCOVERED: &str = "relay=\"discovered\"";

/// A server `a` (not syncing) that serves a repository announced on `a` and on a second
/// server still to start at `b_port`.
pub struct Source {
    /// The source.
    pub a: TestServer,
    /// The repository, served on `a`.
    pub repo: Repo,
    /// `a`'s port.
    pub a_port: u16,
    /// The port reserved for the syncing server.
    pub b_port: u16,
}

impl Source {
    /// Starts `a` and hosts the repository `identifier` on it.
    pub async fn start(identifier: &str) -> Self {
        let (a_port, b_port) = (free_port(), free_port());
        let a = not_syncing(a_port).start();
        let repo = Repo::new(identifier, &[addr(a_port), addr(b_port)]);
        repo.host_on(&a).await;
        Self { a, repo, a_port, b_port }
    }

    /// A builder for the second server: on `b_port`, syncing from `a`.
    pub fn b(&self) -> TestServerBuilder {
        syncing(self.b_port, &[self.a.ws_url()])
    }
}

/// Two servers: `a` serves a repository (announced on both) and does not sync; `b` syncs
/// from `a`, holds the synced announcement and state, and hunting fetches their git data
/// from `a`, so the repository is served on `b` too.
pub struct Pair {
    /// The source.
    pub a: TestServer,
    /// The syncing server.
    pub b: TestServer,
    /// The repository on both.
    pub repo: Repo,
    /// `a`'s port.
    pub a_port: u16,
    /// `b`'s port.
    pub b_port: u16,
}

impl Pair {
    /// Starts both; `b_args` are extra flags for `b`.
    pub async fn start(b_args: &[&str]) -> Self {
        let Source { a, repo, a_port, b_port } = Source::start("synced-repo").await;
        let mut builder = syncing(b_port, &[a.ws_url()]);
        for arg in b_args {
            builder = builder.arg(*arg);
        }
        let b = builder.start();
        wait_for_event(&b, &repo.announcement, "the repository served on b").await;
        Self { a, b, repo, a_port, b_port }
    }
}
