//! `/metrics` after real traffic: every metric of ngit-grasp that applies to what this
//! server does is there with ngit-grasp's name, type and labels, and the counts match what
//! the clients did. The Grafana dashboard in docs/ queries only metrics a server exports.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_tests::events;
use grasp_tests::git::Workdir;
use grasp_tests::metrics::Exposition;
use grasp_tests::remotes::refused_url;
use grasp_tests::{frontend_tests, host_repository, publish, wait_until, Frontend, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::json;

/// (name, type, label names) of the ngit-grasp metrics this server produces. The sync rows
/// of the reference table come with GRASP-02 relay sync (docs/reference/metrics.md).
const NGIT_METRICS: &[(&str, &str, &[&str])] = &[
    ("ngit_build_info", "gauge", &["version", "commit"]),
    ("ngit_uptime_seconds", "gauge", &[]),
    ("ngit_websocket_connections_total", "counter", &[]),
    ("ngit_websocket_connections_active", "gauge", &[]),
    ("ngit_websocket_connection_duration_seconds", "histogram", &[]),
    ("ngit_websocket_messages_received_total", "counter", &["type"]),
    ("ngit_websocket_messages_sent_total", "counter", &["type"]),
    ("ngit_websocket_unique_ips", "gauge", &[]),
    ("ngit_websocket_flagged_abusers", "gauge", &[]),
    ("ngit_git_operations_total", "counter", &["operation", "status"]),
    ("ngit_git_operation_duration_seconds", "histogram", &[]),
    ("ngit_git_bytes_total", "counter", &["direction"]),
    ("ngit_git_push_authorization_total", "counter", &["result"]),
    ("ngit_git_top_repos_bytes", "gauge", &["repo"]),
    ("ngit_events_received_total", "counter", &["kind"]),
    ("ngit_events_stored_total", "counter", &["kind"]),
    ("ngit_events_rejected_total", "counter", &["kind", "reason"]),
    ("ngit_repositories_total", "gauge", &[]),
];

/// Asserts family `name` is declared with `kind` and every sample carries exactly `labels`
/// (plus `le` on histogram buckets).
fn assert_family(m: &Exposition, name: &str, kind: &str, labels: &[&str]) {
    assert_eq!(m.type_of(name), Some(kind), "# TYPE of {name}");
    let samples: Vec<_> = m
        .samples
        .iter()
        .filter(|s| s.name == name || (kind == "histogram" && s.name.starts_with(name)))
        .collect();
    assert!(!samples.is_empty(), "{name} has no samples");
    for s in samples {
        let mut expected: Vec<&str> = labels.to_vec();
        if s.name.ends_with("_bucket") {
            expected.push("le");
        }
        expected.sort();
        let got: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(got, expected, "labels of {s:?}");
    }
}

fn value(m: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.value(name, labels).unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

async fn ngit_metrics_count_clones_fetches_pushes_and_events(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let owner = Keys::generate();
    let d = "metered";
    let repo = host_repository(&server, &client, &owner, d, &[]).await; // one accepted push
    let url = server.clone_url(&owner.public_key(), d);

    let first = Workdir::clone_from(&url, &[]); // protocol v2
                                                // `clone -c` configures the new repository before it fetches: protocol v0 throughout.
    let second = Workdir::clone_from(&url, &["-c", "protocol.version=0"]);
    let next = first.commit("more", b"more");
    // One second after the state host_repository signed, so it is strictly newer.
    let later = Timestamp::from(Timestamp::now().as_secs() + 1);
    let state = events::state_at(&owner, d, &[("refs/heads/main", &next)], Some("main"), later);
    publish(&client, &state).await.unwrap();
    first.ok(&["push", "-q", &url, "main"]);
    second.ok(&["fetch", "-q", "origin"]);
    assert_eq!(second.rev("origin/main"), next);
    // git answers a want of an unknown object with an error inside a complete response.
    second.fails(&["fetch", "-q", "origin", &"ab".repeat(20)]);
    first.commit("unsigned", b"no state for this");
    first.fails(&["push", &url, "main"]);

    publish(&client, &events::issue(&owner, &repo)).await.unwrap();
    assert!(publish(&client, &events::orphan(&owner)).await.is_err());
    let mut raw = RawClient::connect(&server.ws_url()).await;
    raw.send_text("not json").await;
    assert_eq!(raw.recv().await[0], "NOTICE");
    raw.req("s", &[json!({"kinds": [30617]})]).await.unwrap();
    raw.send(json!(["CLOSE", "s"])).await;
    drop(raw);

    let m = wait_until("the closed connection is counted", Duration::from_secs(20), || async {
        let m = Exposition::parse(&server.metrics().await);
        (m.value("ngit_websocket_connection_duration_seconds_count", &[]) >= Some(1.0)).then_some(m)
    })
    .await;
    for (name, kind, labels) in NGIT_METRICS {
        assert_family(&m, name, kind, labels);
    }

    let ops = |operation, status| {
        value(&m, "ngit_git_operations_total", &[("operation", operation), ("status", status)])
    };
    assert_eq!(ops("clone", "success"), 2.0, "one v2 and one v0 clone");
    assert_eq!(ops("fetch", "success"), 1.0, "a fetch sends have lines");
    assert_eq!(ops("push", "success"), 2.0);
    assert_eq!(ops("push", "rejected"), 1.0);
    assert_eq!(ops("fetch", "error"), 1.0, "the fetch of an unknown object");
    assert_eq!(ops("clone", "error") + ops("push", "error"), 0.0);
    assert_eq!(value(&m, "ngit_git_operation_duration_seconds_count", &[]), 7.0);
    assert_eq!(value(&m, "ngit_git_push_authorization_total", &[("result", "accepted")]), 2.0);
    assert_eq!(value(&m, "ngit_git_push_authorization_total", &[("result", "rejected")]), 1.0);
    let bytes_in = value(&m, "ngit_git_bytes_total", &[("direction", "in")]);
    let bytes_out = value(&m, "ngit_git_bytes_total", &[("direction", "out")]);
    assert!(bytes_in > 0.0 && bytes_out > 0.0, "in {bytes_in}, out {bytes_out}");
    let repo_label = format!("{}/{d}", owner.public_key().to_bech32().unwrap());
    assert_eq!(value(&m, "ngit_git_top_repos_bytes", &[("repo", &repo_label)]), bytes_in + bytes_out);
    assert_eq!(value(&m, "ngit_repositories_total", &[]), 1.0);

    assert_eq!(value(&m, "ngit_events_received_total", &[("kind", "30618")]), 2.0);
    assert_eq!(value(&m, "ngit_events_stored_total", &[("kind", "1621")]), 1.0);
    assert_eq!(value(&m, "ngit_events_rejected_total", &[("kind", "1"), ("reason", "unrelated")]), 1.0);
    let received = |t| value(&m, "ngit_websocket_messages_received_total", &[("type", t)]);
    assert_eq!((received("EVENT"), received("INVALID"), received("CLOSE")), (5.0, 1.0, 1.0));
    assert!(received("REQ") >= 1.0);
    let sent = |t| value(&m, "ngit_websocket_messages_sent_total", &[("type", t)]);
    assert_eq!((sent("OK"), sent("NOTICE")), (5.0, 1.0));
    assert!(sent("EOSE") >= 1.0);

    assert_eq!(value(&m, "ngit_websocket_connections_active", &[]), 1.0, "the nostr-sdk client");
    assert!(value(&m, "ngit_websocket_connections_total", &[]) >= 2.0);
    assert_eq!(value(&m, "ngit_websocket_unique_ips", &[]), 1.0);
    assert_eq!(value(&m, "ngit_websocket_flagged_abusers", &[]), 0.0);
    assert!(value(&m, "ngit_uptime_seconds", &[]) > 0.0);
    let build = m.samples_of("ngit_build_info").next().unwrap();
    assert_eq!(build.value, 1.0);
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    // A commit of this repository (binaries built before the latest commit name an earlier
    // one), unless the source is not a git checkout. The checkout the tests run in (the
    // working directory), not the one this test binary was first compiled in: with a shared
    // target directory cargo may reuse the binary from another clone.
    let commit = &build.labels["commit"];
    let git = |args: &[&str]| std::process::Command::new("git").args(args).output().ok();
    if git(&["rev-parse", "HEAD"]).is_some_and(|o| o.status.success()) {
        assert!(commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()), "commit label {commit}");
        let known =
            git(&["cat-file", "-e", &format!("{commit}^{{commit}}")]).is_some_and(|o| o.status.success());
        assert!(known, "ngit_build_info names commit {commit}, which this repository does not have");
    }
}

#[tokio::test]
async fn an_ip_over_the_connection_threshold_is_flagged_and_unflagged() {
    let server = TestServer::builder().arg("--abuser-connection-threshold=2").start();
    let gauge = |name: &'static str| {
        let server = &server;
        async move { Exposition::parse(&server.metrics().await).value(name, &[]).unwrap() }
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(RawClient::connect(&server.ws_url()).await);
    }
    wait_until("three connections from one IP are flagged", Duration::from_secs(20), || async {
        (gauge("ngit_websocket_connections_active").await == 3.0).then_some(())
    })
    .await;
    assert_eq!(gauge("ngit_websocket_flagged_abusers").await, 1.0);
    assert_eq!(gauge("ngit_websocket_unique_ips").await, 1.0, "a count of IPs, never the IPs");
    open.pop();
    wait_until("back at the threshold, the IP is no longer flagged", Duration::from_secs(20), || async {
        (gauge("ngit_websocket_flagged_abusers").await == 0.0).then_some(())
    })
    .await;
    drop(open);
    wait_until("no connection left", Duration::from_secs(20), || async {
        (gauge("ngit_websocket_unique_ips").await == 0.0).then_some(())
    })
    .await;
}

/// The dashboard operators import (docs/grafana/grasp-server.json).
fn dashboard() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/grasp-server.json");
    let text = std::fs::read_to_string(path).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, those inside collapsed rows included.
fn all_panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Metric names (`ngit_*`, `grasp_*`) a PromQL expression uses: its identifiers with
/// those prefixes (label values are quoted strings, which never start with them here).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("ngit_") || word.starts_with("grasp_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        "histogram_quantile(0.5, sum by (le) (rate(ngit_git_operation_duration_seconds_bucket{job=~\"$job\"}[5m]))) / grasp_x",
    );
    assert_eq!(names, vec!["ngit_git_operation_duration_seconds_bucket", "grasp_x"]);
    assert!(metric_names("sum(rate(my_ngit_thing[5m]))").is_empty());
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "grasp-server");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30), "a current Grafana schema");
    let panels = all_panels(&dashboard);
    let rows: Vec<&str> =
        panels.iter().filter(|p| p["type"] == "row").map(|p| p["title"].as_str().unwrap()).collect();
    for row in ["Relay", "Git", "Purgatory", "Hunting", "Sync"] {
        assert!(rows.contains(&row), "the dashboard has a {row} row: {rows:?}");
    }
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().expect("panel id")).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");

    // Every query, grouped by the row it sits under.
    let mut queries: Vec<(String, String)> = Vec::new();
    let mut row = String::new();
    for panel in &panels {
        if panel["type"] == "row" {
            row = panel["title"].as_str().unwrap().to_owned();
            continue;
        }
        assert!(
            panel["gridPos"]["w"].is_u64() && panel["gridPos"]["h"].is_u64(),
            "{} has a size",
            panel["title"]
        );
        if panel["type"] == "text" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{} uses the datasource variable",
            panel["title"]
        );
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        for target in targets.unwrap_or_else(|| panic!("{} has no query", panel["title"])) {
            queries.push((row.clone(), target["expr"].as_str().expect("expr").to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            queries.push(("variables".to_owned(), query.to_owned()));
        }
    }

    // A server that served a clone, an accepted and a rejected push, and events, and that
    // syncs with a peer it cannot reach.
    let server = TestServer::builder()
        .arg("--sync=true")
        .arg(format!("--sync-bootstrap-relays=ws://127.0.0.1:{}", grasp_tests::sync::free_port()))
        .start();
    let client = server.client().await;
    let owner = Keys::generate();
    host_repository(&server, &client, &owner, "dash", &[]).await;
    let url = server.clone_url(&owner.public_key(), "dash");
    let work = Workdir::clone_from(&url, &[]);
    work.commit("x", b"unsigned");
    work.fails(&["push", &url, "main"]);
    assert!(publish(&client, &events::orphan(&owner)).await.is_err());
    // A held state whose data is nowhere: the hunter tries the other announced clone URL.
    let hunted = Keys::generate();
    let clone = [server.clone_url(&hunted.public_key(), "hunted"), refused_url("nobody/hunted.git")];
    let announcement = events::announcement_with(&hunted, "hunted", &clone, &[server.ws_url()], &[]);
    publish(&client, &announcement).await.unwrap();
    let nowhere = "9".repeat(40);
    publish(&client, &events::state(&hunted, "hunted", &[("refs/heads/main", &nowhere)], Some("main")))
        .await
        .unwrap();
    let m = wait_until("the hunter tried the other clone URL", Duration::from_secs(30), || async {
        let m = Exposition::parse(&server.metrics().await);
        let tried = m.samples_of("grasp_hunt_fetches_started_total").next().is_some_and(|s| s.value > 0.0);
        let synced = m.samples_of("ngit_sync_connection_attempts_total").next().is_some();
        (tried && synced).then_some(m)
    })
    .await;

    let mut checked = BTreeSet::new();
    for (row, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "a query in {row} names no grasp/ngit metric: {expr}");
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| m.type_of(f) == Some("histogram")))
                .unwrap_or(&name);
            assert!(m.type_of(family).is_some(), "{row} queries {name}, which the server does not export");
            checked.insert(family.to_owned());
        }
    }
    for row in ["Relay", "Git", "Purgatory", "Hunting", "Sync"] {
        assert!(queries.iter().any(|(r, _)| r == row), "the {row} row has queries");
    }
    assert!(checked.len() >= 30, "the dashboard covers the metrics ({} checked)", checked.len());
}

async fn metrics_can_live_on_a_listener_of_their_own(frontend: Frontend) {
    let port = grasp_tests::sync::free_port();
    let server = frontend.builder().arg(format!("--metrics-bind-address=127.0.0.1:{port}")).start();
    let public = grasp_tests::http::request(&server.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(public.status, 404, "not on the public listener");
    let private = grasp_tests::http::request(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[], b"").await;
    assert_eq!(private.status, 200);
    let text = String::from_utf8_lossy(&private.body);
    assert!(text.contains("ngit_websocket_connections_total"), "{text}");
    let other = grasp_tests::http::request(&format!("127.0.0.1:{port}"), "GET", "/", &[], b"").await;
    assert_eq!(other.status, 404, "only /metrics there");
}

frontend_tests!(
    ngit_metrics_count_clones_fetches_pushes_and_events,
    metrics_can_live_on_a_listener_of_their_own
);
