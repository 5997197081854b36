//! The outbound target policy from outside: what a pull request's `clone` tags can make the
//! server dial. Listeners on 127.0.0.1 stand for "services on the server's own network";
//! they count the connections they get.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grasp_tests::sync::{metric_sum, wait_metrics};
use grasp_tests::{host_repository, publish, wait_until, TestServer};
use nostr_sdk::prelude::*;
use tokio::io::AsyncWriteExt;

const D: &str = "repo";

/// Connections open at once over a set of listeners, and the most ever open.
#[derive(Debug, Default)]
struct Concurrency {
    open: AtomicUsize,
    max: AtomicUsize,
}

/// A loopback service that counts connections and answers each with a 404 after `hold`.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Listener {
    async fn start(hold: Duration, concurrency: Arc<Concurrency>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted: Arc<AtomicUsize> = Arc::default();
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let now = concurrency.open.fetch_add(1, Ordering::SeqCst) + 1;
                concurrency.max.fetch_max(now, Ordering::SeqCst);
                let concurrency = concurrency.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    let _ = socket.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
                    concurrency.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { port, accepted }
    }

    async fn many(n: usize, hold: Duration, concurrency: &Arc<Concurrency>) -> Vec<Self> {
        futures::future::join_all((0..n).map(|_| Self::start(hold, concurrency.clone()))).await
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/r.git", self.port)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A pull request on `coordinate` whose commit is nowhere, with `clone` tags `urls`.
fn pull_request(keys: &Keys, coordinate: &str, urls: &[String]) -> Event {
    let mut clone = vec!["clone".to_owned()];
    clone.extend(urls.iter().cloned());
    EventBuilder::new(Kind::Custom(1618), "please merge")
        .tags([
            Tag::parse(["a", coordinate]).unwrap(),
            Tag::parse(["subject", "a change"]).unwrap(),
            Tag::parse(["c", &"cd".repeat(20)]).unwrap(),
            Tag::parse(clone).unwrap(),
        ])
        .sign_with_keys(keys)
        .unwrap()
}

async fn hosted(server: &TestServer) -> (Client, String) {
    let client = server.client().await;
    let coordinate = host_repository(server, &client, &Keys::generate(), D, &[]).await;
    (client, coordinate)
}

fn refused(metrics: &str, reason: &str) -> f64 {
    metric_sum(metrics, "grasp_outbound_refused_total", &["kind=\"git\"", &format!("reason=\"{reason}\"")])
}

#[tokio::test]
async fn loopback_clone_urls_are_dialed_only_when_non_global_targets_are_allowed() {
    let listeners = Listener::many(2, Duration::ZERO, &Arc::default()).await;
    let urls: Vec<String> = listeners.iter().map(Listener::url).collect();

    // Strict: the policy refuses them and nothing connects.
    let strict = TestServer::builder().strict_outbound().arg("--hunt-client-delay-ms=0").start();
    let (client, coordinate) = hosted(&strict).await;
    publish(&client, &pull_request(&Keys::generate(), &coordinate, &urls)).await.expect("held");
    wait_metrics(&strict, "the hunt refused the loopback URLs", |m| refused(m, "non_global_address") >= 2.0)
        .await;
    assert_eq!(listeners.iter().map(Listener::accepted).sum::<usize>(), 0, "nothing was dialed");

    // Allowed (tests, closed networks): the same event makes the server dial them.
    let allowed = TestServer::builder().arg("--hunt-client-delay-ms=0").start();
    let (client, coordinate) = hosted(&allowed).await;
    publish(&client, &pull_request(&Keys::generate(), &coordinate, &urls)).await.expect("held");
    wait_until("a listener was dialed", Duration::from_secs(30), || {
        std::future::ready((listeners.iter().map(Listener::accepted).sum::<usize>() > 0).then_some(()))
    })
    .await;
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused() {
    let listener = Listener::start(Duration::ZERO, Arc::default()).await;
    let server = TestServer::builder()
        .strict_outbound()
        .arg("--hunt-client-delay-ms=0")
        .arg("--test-resolve=sneaky.example.com=127.0.0.1")
        .start();
    let (client, coordinate) = hosted(&server).await;
    let url = format!("http://sneaky.example.com:{}/r.git", listener.port);
    publish(&client, &pull_request(&Keys::generate(), &coordinate, &[url])).await.expect("held");
    let metrics = wait_metrics(&server, "the resolved loopback address was refused", |m| {
        refused(m, "non_global_address") >= 1.0
    })
    .await;
    assert_eq!(listener.accepted(), 0, "nothing was dialed: {metrics}");
    assert!(!metrics.contains("sneaky"), "no metric names the URL: {metrics}");
}

#[tokio::test]
async fn one_event_can_name_only_a_few_urls() {
    let listeners = Listener::many(20, Duration::ZERO, &Arc::default()).await;
    let urls: Vec<String> = listeners.iter().map(Listener::url).collect();
    let server =
        TestServer::builder().arg("--hunt-client-delay-ms=0").arg("--hunt-max-urls-per-event=3").start();
    let (client, coordinate) = hosted(&server).await;
    publish(&client, &pull_request(&Keys::generate(), &coordinate, &urls)).await.expect("held");
    // The first attempt ends (every allowed URL tried) and backs off: the listing says so.
    wait_until("the first attempt tried its URLs", Duration::from_secs(30), || {
        let listed = server.purgatory_list();
        let ended = listed.iter().any(|e| e["hunt_attempts"].as_u64().is_some_and(|n| n >= 1));
        std::future::ready(ended.then_some(()))
    })
    .await;
    let dialed = listeners.iter().filter(|l| l.accepted() > 0).count();
    assert_eq!(dialed, 3, "only the first 3 clone URLs of the event are hunted");
    assert!(listeners[3..].iter().all(|l| l.accepted() == 0));
}

#[tokio::test]
async fn the_global_fetch_cap_holds_across_identifiers() {
    // Each remote keeps its connection 2 s: fetches overlap.
    let concurrency: Arc<Concurrency> = Arc::default();
    let listeners = Listener::many(20, Duration::from_secs(2), &concurrency).await;
    // Every remote is on 127.0.0.1: lift the per-domain and per-address limits so only the
    // global cap binds.
    let server = TestServer::builder()
        .arg("--hunt-client-delay-ms=0")
        .arg("--hunt-max-concurrent-fetches=3")
        .arg("--hunt-domain-concurrency=100")
        .arg("--hunt-domain-requests-per-minute=1000")
        .arg("--hunt-max-fetches-per-address=100")
        .start();
    let client = server.client().await;
    for (i, listener) in listeners.iter().enumerate() {
        let owner = Keys::generate();
        let d = format!("held-{i}");
        let coordinate = host_repository(&server, &client, &owner, &d, &[]).await;
        let pr = pull_request(&Keys::generate(), &coordinate, &[listener.url()]);
        publish(&client, &pr).await.expect("held");
    }
    wait_until("many fetches ran", Duration::from_secs(60), || {
        std::future::ready((listeners.iter().filter(|l| l.accepted() > 0).count() >= 9).then_some(()))
    })
    .await;
    let at_once = concurrency.max.load(Ordering::SeqCst);
    assert!((1..=3).contains(&at_once), "{at_once} fetches were in flight at once");
}
