//! Abuse resistance on the push side, black-box, as an attacker would try it with plain git,
//! raw HTTP and a websocket: every `refs/nostr` ref, placeholder, held event, push and
//! byte an anonymous client can make the server keep has a bound, refused with a reason the
//! client reads, while other clients are served (decisions 11, 29, 30).

use std::time::Duration;

use grasp_tests::events::{self, coordinate};
use grasp_tests::git::{bare_refs, git, git_ok, ref_at, waiting_ref, Workdir};
use grasp_tests::http::request;
use grasp_tests::metrics::Exposition;
use grasp_tests::served::{is_served, publish_to};
use grasp_tests::{frontend_tests, wait_until, Frontend, RawClient, TestServer};
use nostr_sdk::prelude::*;

const D: &str = "target";
const HELD: &str = "purgatory: won't be served until git data arrives";

/// A repository of `owner` hosted on `server` with one commit on `main`, and a clone of it.
struct Hosted {
    server: TestServer,
    owner: Keys,
    identifier: String,
    announcement: Event,
    state: Event,
    work: Workdir,
    main: String,
}

impl Hosted {
    async fn new(server: TestServer) -> Self {
        Self::named(server, D).await
    }

    async fn named(server: TestServer, identifier: &str) -> Self {
        let owner = Keys::generate();
        let announcement = events::announcement(&owner, identifier, &server.addr, &[]);
        assert_eq!(publish_to(&server, &announcement).await, (true, HELD.to_owned()));
        let work = Workdir::new();
        let main = work.commit("README", b"a public commit");
        let state = events::state(&owner, identifier, &[("refs/heads/main", &main)], Some("main"));
        assert_eq!(publish_to(&server, &state).await, (true, HELD.to_owned()));
        let hosted =
            Self { server, owner, identifier: identifier.to_owned(), announcement, state, work, main };
        hosted.work.ok(&["push", &hosted.url(), "main"]);
        hosted
    }

    fn url(&self) -> String {
        self.server.clone_url(&self.owner.public_key(), &self.identifier)
    }

    fn path(&self) -> std::path::PathBuf {
        self.server.repo_path(&self.owner.public_key(), &self.identifier)
    }

    fn coordinate(&self) -> String {
        coordinate(&self.owner.public_key(), &self.identifier)
    }

    /// Refs of the bare repository under `prefix`.
    fn refs_under(&self, prefix: &str) -> Vec<(String, String)> {
        bare_refs(&self.path()).0.into_iter().filter(|(name, _)| name.starts_with(prefix)).collect()
    }

    /// `git push` of `main`'s commit to `refs/nostr/<id>` for each id in `ids`, from the
    /// client address `from` (sent as `X-Forwarded-For`; the server trusts it in these tests
    /// that start it with `--trust-forwarded-for`).
    fn push_nostr_refs(
        &self,
        ids: impl IntoIterator<Item = u64>,
        from: Option<&str>,
    ) -> std::process::Output {
        let specs: Vec<String> =
            ids.into_iter().map(|i| format!("{}:refs/nostr/{i:064x}", self.main)).collect();
        let header = from.map(|ip| format!("http.extraHeader=X-Forwarded-For: {ip}"));
        let mut args: Vec<&str> = Vec::new();
        if let Some(header) = &header {
            args.extend(["-c", header]);
        }
        args.extend(["push", "--porcelain"]);
        let url = self.url();
        args.push(&url);
        args.extend(specs.iter().map(String::as_str));
        git(self.work.path(), &args)
    }
}

/// A state of `owner` for `D` signed `seconds` after now, so it is newer than the one
/// [`Hosted`] pushed (states of one author in one second tie).
fn later_state(owner: &Keys, refs: &[(&str, &str)], seconds: u64) -> Event {
    let at = Timestamp::from(Timestamp::now().as_secs() + seconds);
    events::state_at(owner, D, refs, Some("main"), at)
}

fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A fresh clone of `url` with protocol `version` works and has only `main` (no waiting
/// refs); `git fsck` is clean.
fn assert_clones(url: &str, main: &str) {
    for version in ["0", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let protocol = format!("protocol.version={version}");
        let out = git(dir.path(), &["-c", &protocol, "clone", "--mirror", url, "c.git"]);
        assert!(out.status.success(), "clone v{version}: {}", output_text(&out));
        let repo = dir.path().join("c.git");
        let refs = git_ok(&repo, &["for-each-ref", "--format=%(refname) %(objectname)"]);
        assert_eq!(refs, format!("refs/heads/main {main}"), "v{version}");
        git_ok(&repo, &["fsck", "--no-dangling"]);
        let listed = git_ok(dir.path(), &["-c", &protocol, "ls-remote", url]);
        assert!(!listed.contains("refs/nostr/") && !listed.contains("refs/grasp/"), "v{version}: {listed}");
    }
}

async fn metric(server: &TestServer, name: &str, labels: &[(&str, &str)]) -> f64 {
    Exposition::parse(&server.metrics().await).value(name, labels).unwrap_or(0.0)
}

async fn a_flood_of_pull_request_refs_is_refused_and_clones_keep_working(frontend: Frontend) {
    let h = Hosted::new(frontend.start()).await;
    // 2,000 refs/nostr refs in one push (an empty pack: the commit is public): refused whole.
    let out = h.push_nostr_refs(0..2000, None);
    assert!(!out.status.success());
    let text = output_text(&out);
    assert!(text.contains("carries 2000 refs/nostr refs") && text.contains("at most 32"), "{text}");
    assert!(h.refs_under("refs/nostr/").is_empty() && h.refs_under("refs/grasp/").is_empty());
    assert_clones(&h.url(), &h.main);

    // Up to 100 may wait in one repository; the push that would go over is refused whole.
    for batch in 0..3 {
        let out = h.push_nostr_refs(batch * 32..(batch + 1) * 32, None);
        assert!(out.status.success(), "batch {batch}: {}", output_text(&out));
    }
    let out = h.push_nostr_refs(96..128, None);
    let text = output_text(&out);
    assert!(!out.status.success() && text.contains("already has 96 refs/nostr refs waiting"), "{text}");
    assert_eq!(h.refs_under("refs/grasp/waiting/").len(), 96, "the refused push added none");
    assert!(h.refs_under("refs/nostr/").is_empty(), "waiting refs are not in the served namespace");
    // Pushing waiting ids again makes nothing new.
    assert!(h.push_nostr_refs(0..4, None).status.success());
    assert_clones(&h.url(), &h.main);
    for bound in ["nostr_refs_per_push", "placeholders_per_repository"] {
        assert_eq!(metric(&h.server, "grasp_push_refused_total", &[("bound", bound)]).await, 1.0, "{bound}");
    }
}

async fn placeholders_are_bounded_per_client_across_repositories(frontend: Frontend) {
    let server =
        frontend.builder().arg("--trust-forwarded-for").arg("--max-placeholders-per-client=4").start();
    let a = Hosted::named(server, "one").await;
    let b_url = {
        let owner = Keys::generate();
        grasp_tests::host_repository(&a.server, &a.server.client().await, &owner, "two", &[]).await;
        a.server.clone_url(&owner.public_key(), "two")
    };
    assert!(a.push_nostr_refs(0..3, Some("198.51.100.7")).status.success());
    let spec = |i: u64| format!("{}:refs/nostr/{i:064x}", a.main);
    let from = |ip: &str| format!("http.extraHeader=X-Forwarded-For: {ip}");
    let out = git(a.work.path(), &["-c", &from("198.51.100.7"), "push", &b_url, &spec(10), &spec(11)]);
    let text = output_text(&out);
    assert!(!out.status.success() && text.contains("your address already has 3"), "{text}");
    // Another address of the same IPv6 /64 is the same client; another client is served.
    let out = git(a.work.path(), &["-c", &from("2001:db8:7:7::1"), "push", &b_url, &spec(20), &spec(21)]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = git(
        a.work.path(),
        &["-c", &from("2001:db8:7:7::2"), "push", &b_url, &spec(22), &spec(23), &spec(24)],
    );
    assert!(!out.status.success() && output_text(&out).contains("your address already has 2"));
    let out = git(a.work.path(), &["-c", &from("198.51.100.8"), "push", &b_url, &spec(10), &spec(11)]);
    assert!(out.status.success(), "{}", output_text(&out));
}

async fn twenty_thousand_waiting_placeholders_leave_clone_and_fetch_working(frontend: Frontend) {
    let mut h = Hosted::new(frontend.start()).await;
    // Made directly, past every limit: refs/nostr refs for unknown events, as an older
    // version (or a crash right after the pushes) left them. Startup recovery records them
    // as placeholders and moves them out of the served refs.
    let mut input = String::new();
    for i in 0..20_000u64 {
        input.push_str(&format!("create refs/nostr/{i:064x} {}\n", h.main));
    }
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(h.path())
        .args(["update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    h.server.restart();
    let path = h.path();
    wait_until("startup recovery parks the 20,000 refs", Duration::from_secs(180), || {
        let waiting = git_ok(&path, &["for-each-ref", "--count=20001", "--format=x", "refs/grasp/waiting/"]);
        let served = git_ok(&path, &["for-each-ref", "--format=x", "refs/nostr/"]);
        let done = waiting.lines().count() == 20_000 && served.is_empty();
        async move { done.then_some(()) }
    })
    .await;
    assert_clones(&h.url(), &h.main);
    // A fetch into an existing clone, and its advertisement, stay small.
    let clone = Workdir::clone_from(&h.url(), &[]);
    clone.ok(&["fetch", "origin"]);
    let advertised = request(
        &h.server.addr,
        "GET",
        &format!("{}/info/refs?service=git-upload-pack", h.url().trim_start_matches(&h.server.http_url())),
        &[],
        b"",
    )
    .await;
    assert_eq!(advertised.status, 200);
    assert!(advertised.body.len() < 4096, "{} bytes advertised", advertised.body.len());
    let placeholders = h.server.purgatory_list().into_iter().filter(|e| e["kind"] == "placeholder").count();
    assert_eq!(placeholders, 20_000);
}

async fn refs_nostr_under_the_id_of_another_kind_of_event_is_refused(frontend: Frontend) {
    let h = Hosted::new(frontend.start()).await;
    let note = events::tagged(&Keys::generate(), 1, "a", &h.coordinate());
    assert!(publish_to(&h.server, &note).await.0, "a note tagging the repository is accepted");
    for (event, kind) in [(&h.announcement, 30617), (&h.state, 30618), (&note, 1)] {
        let name = format!("refs/nostr/{}", event.id.to_hex());
        let out = h.work.fails(&["push", &h.url(), &format!("{}:{name}", h.main)]);
        assert!(out.contains(&format!("kind {kind} event here, not a pull request")), "{out}");
        let prs = h.server.prs_url(&Keys::generate().public_key(), &h.identifier);
        let out = h.work.fails(&["push", &prs, &format!("{}:{name}", h.main)]);
        assert!(out.contains(&format!("kind {kind} event here")), "/prs/: {out}");
    }
    assert!(h.refs_under("refs/nostr/").is_empty() && h.refs_under("refs/grasp/").is_empty());
}

async fn naming_a_held_event_in_a_ref_extends_nothing(frontend: Frontend) {
    let server =
        frontend.builder().arg("--purgatory-expiry-secs=600").arg("--push-extension-secs=3000").start();
    let h = Hosted::new(server).await;
    let next = h.work.commit("later", b"not pushed");
    let held_state = later_state(&h.owner, &[("refs/heads/main", &next)], 1);
    assert_eq!(publish_to(&h.server, &held_state).await, (true, HELD.to_owned()));
    let held_pr = events::pull_request(&Keys::generate(), &h.coordinate(), &"e".repeat(40), &h.url());
    assert_eq!(publish_to(&h.server, &held_pr).await, (true, HELD.to_owned()));
    let expiry = |event: &Event| {
        let listed = h.server.purgatory_list();
        listed.iter().find(|e| e["event_id"] == event.id.to_hex()).map(|e| e["expires_at"].as_u64().unwrap())
    };
    let (state_before, pr_before) = (expiry(&held_state).unwrap(), expiry(&held_pr).unwrap());

    let out = h.work.fails(&["push", &h.url(), &format!("{}:refs/nostr/{}", h.main, held_state.id.to_hex())]);
    assert!(out.contains("kind 30618 event here"), "{out}");
    let out = h.work.fails(&["push", &h.url(), &format!("{}:refs/nostr/{}", h.main, held_pr.id.to_hex())]);
    assert!(out.contains("'c' tag"), "{out}");
    // A raw push whose only command is a no-op naming the held pull request.
    let noop = format!("{0} {0} refs/nostr/{1}\0report-status\n", "e".repeat(40), held_pr.id.to_hex());
    let mut body = format!("{:04x}{noop}", noop.len() + 4).into_bytes();
    body.extend_from_slice(b"0000");
    let path = format!("{}/git-receive-pack", h.url().trim_start_matches(&h.server.http_url()));
    let headers = [("Content-Type", "application/x-git-receive-pack-request")];
    request(&h.server.addr, "POST", &path, &headers, &body).await;
    assert_eq!(expiry(&held_state), Some(state_before), "a held state named in a ref is not extended");
    assert_eq!(expiry(&held_pr), Some(pr_before), "a held pull request named by a no-op is not extended");
}

/// Publishes `event` over a websocket for the client address `ip` (forwarded, trusted).
async fn publish_from(server: &TestServer, ip: &str, event: Event) -> (bool, String) {
    let mut client = RawClient::connect_with_headers(&server.ws_url(), &[("X-Forwarded-For", ip)]).await;
    client.publish(&events::json(&event)).await
}

async fn each_purgatory_cap_refuses_with_its_prefix_while_others_are_served(frontend: Frontend) {
    let server = frontend
        .builder()
        .arg("--trust-forwarded-for")
        .arg("--purgatory-max-events-per-client=3")
        .arg("--purgatory-max-events-per-pubkey=3")
        .arg("--purgatory-max-events-per-identifier=5")
        .arg("--purgatory-max-events=8")
        .start();
    let one = Hosted::named(server, "one").await;
    let two_owner = Keys::generate();
    let client = one.server.client().await;
    let two = grasp_tests::host_repository(&one.server, &client, &two_owner, "two", &[]).await;
    let url = one.url();
    // Pull requests whose commits are not here are held (each its own commit: distinct ids).
    let mut n = 0u32;
    let mut pr = |keys: &Keys, repo: &str| {
        n += 1;
        events::pull_request(keys, repo, &format!("{n:040x}"), &url)
    };
    let publish_as = |ip: &'static str, event: Event| publish_from(&one.server, ip, event);

    // Per client: the 4th from one address is refused; another address is still served.
    for _ in 0..3 {
        assert_eq!(
            publish_as("10.1.0.1", pr(&Keys::generate(), &one.coordinate())).await,
            (true, HELD.into())
        );
    }
    let (ok, message) = publish_as("10.1.0.1", pr(&Keys::generate(), &one.coordinate())).await;
    assert!(
        !ok && message.starts_with("rate-limited: ") && message.contains("from your address"),
        "{message}"
    );
    assert_eq!(publish_as("10.1.0.2", pr(&Keys::generate(), &one.coordinate())).await, (true, HELD.into()));

    // Per key: three from one key (from three addresses), the 4th refused.
    let key = Keys::generate();
    for ip in ["10.2.0.1", "10.2.0.2", "10.2.0.3"] {
        assert_eq!(publish_as(ip, pr(&key, &two)).await, (true, HELD.into()));
    }
    let (ok, message) = publish_as("10.2.0.4", pr(&key, &two)).await;
    assert!(
        !ok && message.starts_with("rate-limited: ") && message.contains("signed by this key"),
        "{message}"
    );

    // Per identifier: "one" holds 4; a 5th fits, a 6th is refused, "two" still takes events.
    assert_eq!(publish_as("10.3.0.1", pr(&Keys::generate(), &one.coordinate())).await, (true, HELD.into()));
    let (ok, message) = publish_as("10.3.0.2", pr(&Keys::generate(), &one.coordinate())).await;
    assert!(
        !ok && message.starts_with("rate-limited: ") && message.contains("for this repository"),
        "{message}"
    );

    // In total: 8 held (5 + 3); the next one anywhere is refused with `restricted:`.
    let (ok, message) = publish_as("10.4.0.1", pr(&Keys::generate(), &two)).await;
    assert!(!ok && message.starts_with("restricted: ") && message.contains("in all"), "{message}");
    // Events that need no holding are still taken.
    let issue = events::issue(&Keys::generate(), &two);
    assert_eq!(publish_as("10.4.0.1", issue.clone()).await, (true, String::new()));
    assert!(is_served(&one.server, &issue).await);
    for cap in ["client", "pubkey", "identifier", "total"] {
        assert_eq!(metric(&one.server, "grasp_purgatory_refused_total", &[("cap", cap)]).await, 1.0, "{cap}");
    }
}

async fn the_bytes_of_held_events_are_capped_per_client(frontend: Frontend) {
    let server = frontend.builder().arg("--purgatory-max-bytes-per-client=40000").start();
    let h = Hosted::new(server).await;
    let big = |n: u8| {
        EventBuilder::new(Kind::Custom(1618), "x".repeat(30_000))
            .tags([
                Tag::parse(["a", &h.coordinate()]).unwrap(),
                Tag::parse(["c", &format!("{n:040x}")]).unwrap(),
                Tag::parse(["clone", &h.url()]).unwrap(),
            ])
            .sign_with_keys(&Keys::generate())
            .unwrap()
    };
    assert_eq!(publish_to(&h.server, &big(1)).await, (true, HELD.to_owned()));
    let (ok, message) = publish_to(&h.server, &big(2)).await;
    assert!(!ok && message.starts_with("rate-limited: ") && message.contains("39 KiB"), "{message}");
}

async fn pushes_are_rate_limited_per_client(frontend: Frontend) {
    let server = frontend.builder().arg("--trust-forwarded-for").arg("--pushes-per-minute=3").start();
    let h = Hosted::new(server).await;
    for i in 0..3 {
        assert!(h.push_nostr_refs([i], Some("203.0.113.5")).status.success(), "push {i}");
    }
    let out = h.push_nostr_refs([9], Some("203.0.113.5"));
    let text = output_text(&out);
    assert!(
        !out.status.success() && text.contains("rate-limited: too many pushes from your address"),
        "{text}"
    );
    assert!(h.push_nostr_refs([10], Some("203.0.113.6")).status.success(), "another client is served");
    assert_eq!(metric(&h.server, "grasp_push_refused_total", &[("bound", "push_rate")]).await, 1.0);
}

async fn below_the_disk_floor_pushes_are_refused_and_the_relay_goes_on(frontend: Frontend) {
    let server = frontend.builder().arg(format!("--min-free-disk-bytes={}", u64::MAX / 2)).start();
    let owner = Keys::generate();
    let announcement = events::announcement(&owner, D, &server.addr, &[]);
    assert_eq!(publish_to(&server, &announcement).await, (true, HELD.to_owned()), "the relay takes events");
    let work = Workdir::new();
    let main = work.commit("README", b"x");
    let state = events::state(&owner, D, &[("refs/heads/main", &main)], Some("main"));
    assert_eq!(publish_to(&server, &state).await, (true, HELD.to_owned()));
    let out = work.fails(&["push", &server.clone_url(&owner.public_key(), D), "main"]);
    assert!(out.contains("low on disk space") && out.contains("min_free_disk_bytes"), "{out}");
    assert!(bare_refs(&server.repo_path(&owner.public_key(), D)).0.is_empty());
    let issue = events::issue(&Keys::generate(), &coordinate(&owner.public_key(), D));
    assert!(publish_to(&server, &issue).await.0);
    assert_eq!(metric(&server, "grasp_push_refused_total", &[("bound", "disk_floor")]).await, 1.0);
}

async fn an_owner_over_the_repository_quota_cannot_push_more(frontend: Frontend) {
    let server = frontend.builder().arg("--repository-quota-bytes=600000").start();
    let h = Hosted::new(server).await;
    // Under the quota: a push of ~1 MB lands, and then the owner is over it.
    std::fs::write(h.work.path().join("big"), grasp_tests::remotes::incompressible(1_000_000)).unwrap();
    h.work.ok(&["add", "big"]);
    h.work.ok(&["commit", "-q", "-m", "big"]);
    let big = h.work.rev("HEAD");
    let state = later_state(&h.owner, &[("refs/heads/main", &big)], 1);
    assert_eq!(publish_to(&h.server, &state).await, (true, HELD.to_owned()));
    h.work.ok(&["push", &h.url(), "main"]);
    let small = h.work.commit("small", b"one more");
    let state = later_state(&h.owner, &[("refs/heads/main", &small)], 2);
    assert_eq!(publish_to(&h.server, &state).await, (true, HELD.to_owned()));
    let out = h.work.fails(&["push", &h.url(), "main"]);
    assert!(out.contains("repository_quota_bytes"), "{out}");
    assert_eq!(ref_at(&h.path(), "refs/heads/main"), big);
}

async fn a_push_with_a_malformed_tree_is_refused_with_gits_reason(frontend: Frontend) {
    let h = Hosted::new(frontend.start()).await;
    // A tree with an entry named `.git`: git's fsck refuses it (hasDotgit).
    let blob = h.work.ok(&["hash-object", "-w", "README"]);
    let mut mktree = std::process::Command::new("git")
        .current_dir(h.work.path())
        .args(["mktree"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        mktree.stdin.as_mut().unwrap(),
        format!("100644 blob {blob}\t.git\n").as_bytes(),
    )
    .unwrap();
    let tree = String::from_utf8(mktree.wait_with_output().unwrap().stdout).unwrap().trim().to_owned();
    let bad = h.work.ok(&["commit-tree", &tree, "-p", &h.main, "-m", "dot git"]);
    let state = later_state(&h.owner, &[("refs/heads/main", &bad)], 1);
    assert_eq!(publish_to(&h.server, &state).await, (true, HELD.to_owned()));
    let out = h.work.fails(&["push", &h.url(), &format!("{bad}:refs/heads/main")]);
    assert!(out.contains("hasDotgit") || out.contains("contains '.git'"), "{out}");
    assert_eq!(ref_at(&h.path(), "refs/heads/main"), h.main, "nothing landed");
    assert!(!git(&h.path(), &["cat-file", "-e", &bad]).status.success(), "the bad commit is not stored");
}

async fn a_gzip_body_that_inflates_past_the_push_size_is_cut(frontend: Frontend) {
    let server = frontend.builder().arg("--max-push-size=1048576").start();
    let h = Hosted::new(server).await;
    // A valid pack git reads on and on: a commit with 8 MiB of zeros, stored uncompressed
    // (8 MiB of pack), pushed under an authorized command (an unknown refs/nostr id). The
    // gzipped request is a few KiB.
    std::fs::write(h.work.path().join("zeros"), vec![0u8; 8 << 20]).unwrap();
    h.work.ok(&["add", "zeros"]);
    h.work.ok(&["commit", "-q", "-m", "zeros"]);
    let tip = h.work.rev("HEAD");
    let mut pack_objects = std::process::Command::new("git")
        .current_dir(h.work.path())
        .args(["-c", "pack.compression=0", "pack-objects", "--stdout", "--revs", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        pack_objects.stdin.as_mut().unwrap(),
        format!("{tip}\n^{}\n", h.main).as_bytes(),
    )
    .unwrap();
    let pack = pack_objects.wait_with_output().unwrap().stdout;
    assert!(pack.len() > 8 << 20, "an uncompressed pack: {} bytes", pack.len());
    let id = format!("{:064x}", 77);
    let command = format!("{} {tip} refs/nostr/{id}\0report-status side-band-64k\n", "0".repeat(40));
    let mut body = format!("{:04x}{command}", command.len() + 4).into_bytes();
    body.extend_from_slice(b"0000");
    body.extend(pack);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, &body).unwrap();
    let gzipped = encoder.finish().unwrap();
    assert!(gzipped.len() < 64 * 1024);
    let path = format!("{}/git-receive-pack", h.url().trim_start_matches(&h.server.http_url()));
    let headers = [("Content-Type", "application/x-git-receive-pack-request"), ("Content-Encoding", "gzip")];
    let answer = request(&h.server.addr, "POST", &path, &headers, &gzipped).await;
    let text = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status, 200, "{text}");
    assert!(text.contains("push is larger than the 1048576 bytes"), "{text}");
    assert_eq!(ref_at(&h.path(), &format!("refs/nostr/{id}")), "");
    assert_eq!(ref_at(&h.path(), &waiting_ref(&id)), "", "nothing landed");
}

async fn bad_state_ref_names_and_overlong_identifiers_are_refused_at_acceptance(frontend: Frontend) {
    let h = Hosted::new(frontend.start()).await;
    let bad = later_state(&h.owner, &[("refs/heads/main", &h.main), ("refs/heads/a..b", &h.main)], 1);
    let (ok, message) = publish_to(&h.server, &bad).await;
    assert!(!ok && message.starts_with("invalid:") && message.contains("refs/heads/a..b"), "{message}");
    let owner = Keys::generate();
    let too_long = "x".repeat(252);
    let (ok, message) =
        publish_to(&h.server, &events::announcement(&owner, &too_long, &h.server.addr, &[])).await;
    assert!(!ok && message.starts_with("invalid:") && message.contains("longer than 251 bytes"), "{message}");
    let longest = "y".repeat(251);
    let announcement = events::announcement(&owner, &longest, &h.server.addr, &[]);
    assert_eq!(publish_to(&h.server, &announcement).await, (true, HELD.to_owned()));
    assert!(
        h.server.repo_path(&owner.public_key(), &longest).join("HEAD").is_file(),
        "its repository exists"
    );
}

frontend_tests!(
    a_flood_of_pull_request_refs_is_refused_and_clones_keep_working,
    placeholders_are_bounded_per_client_across_repositories,
    twenty_thousand_waiting_placeholders_leave_clone_and_fetch_working,
    refs_nostr_under_the_id_of_another_kind_of_event_is_refused,
    naming_a_held_event_in_a_ref_extends_nothing,
    each_purgatory_cap_refuses_with_its_prefix_while_others_are_served,
    the_bytes_of_held_events_are_capped_per_client,
    pushes_are_rate_limited_per_client,
    below_the_disk_floor_pushes_are_refused_and_the_relay_goes_on,
    an_owner_over_the_repository_quota_cannot_push_more,
    a_push_with_a_malformed_tree_is_refused_with_gits_reason,
    a_gzip_body_that_inflates_past_the_push_size_is_cut,
    bad_state_ref_names_and_overlong_identifiers_are_refused_at_acceptance,
);

#[tokio::test]
async fn the_proxy_answers_a_request_framed_twice_with_400_and_forwards_nothing() {
    let h = Hosted::new(Frontend::Proxy.start()).await;
    let upstream = h.server.upstream().expect("the proxy runs in front of nginx");
    let path = format!("{}/git-upload-pack", h.url().trim_start_matches(&h.server.http_url()));
    let before = upstream.access_log().matches("git-upload-pack").count();
    let headers =
        [("Transfer-Encoding", "chunked"), ("Content-Type", "application/x-git-upload-pack-request")];
    let answer = request(&h.server.addr, "POST", &path, &headers, b"0\r\n\r\n").await;
    assert_eq!(answer.status, 400, "{}", String::from_utf8_lossy(&answer.body));
    assert!(String::from_utf8_lossy(&answer.body).contains("not both"));
    assert_eq!(upstream.access_log().matches("git-upload-pack").count(), before, "nothing reached nginx");
}
