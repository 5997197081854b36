//! GRASP-06, black-box: contributors push pull request commits to
//! `/prs/<npub>/<identifier>.git` and publish the pull request with that URL in its `clone`
//! tag, without announcing a repository. One test per MUST / SHOULD row of the spec (section
//! 6), plus the switch, the size cap and the rate limit.

use std::time::Duration;

use grasp_tests::events::{self, coordinate};
use grasp_tests::git::{git, ref_at, waiting_ref, Workdir};
use grasp_tests::http::request;
use grasp_tests::served::is_served;
use grasp_tests::{frontend_tests, host_repository, wait_until, Frontend, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::json;

const D: &str = "project";
const HELD: &str = "purgatory: won't be served until git data arrives";

/// A contributor of pull requests to `D`, a repository of `owner` that may or may not be
/// hosted on `server`.
struct Contributor {
    server: TestServer,
    raw: RawClient,
    keys: Keys,
    owner: Keys,
    work: Workdir,
}

impl Contributor {
    async fn new(server: TestServer) -> Self {
        let raw = RawClient::connect(&server.ws_url()).await;
        Self { server, raw, keys: Keys::generate(), owner: Keys::generate(), work: Workdir::new() }
    }

    /// `/prs/<contributor npub>/<identifier>.git`
    fn url_for(&self, identifier: &str) -> String {
        self.server.prs_url(&self.keys.public_key(), identifier)
    }

    fn url(&self) -> String {
        self.url_for(D)
    }

    fn path(&self) -> std::path::PathBuf {
        self.server.prs_path(&self.keys.public_key(), D)
    }

    fn repo(&self) -> String {
        coordinate(&self.owner.public_key(), D)
    }

    /// A pull request on the owner's `D` naming this contributor's `/prs/` URL.
    fn pull_request(&self, commit: &str) -> Event {
        events::pull_request(&self.keys, &self.repo(), commit, &self.url())
    }

    async fn publish(&mut self, event: &Event) -> (bool, String) {
        self.raw.publish(&events::json(event)).await
    }

    async fn served(&self, event: &Event) -> bool {
        is_served(&self.server, event).await
    }

    /// `git push <url> <commit>:refs/nostr/<id>`, which must succeed.
    fn push(&self, url: &str, commit: &str, id: &EventId) {
        self.work.ok(&["push", url, &format!("{commit}:refs/nostr/{}", id.to_hex())]);
    }

    /// The same push, which must fail; returns git's output.
    fn push_fails(&self, url: &str, commit: &str, id: &EventId) -> String {
        self.work.fails(&["push", url, &format!("{commit}:refs/nostr/{}", id.to_hex())])
    }
}

/// What `refs/nostr/<id>` points at in the bare repository at `path` ("" when absent).
fn nostr_ref(path: &std::path::Path, id: &EventId) -> String {
    ref_at(path, &format!("refs/nostr/{}", id.to_hex()))
}

/// What the placeholder of `id` waits with in the bare repository at `path` ("" when none).
fn waiting(path: &std::path::Path, id: &EventId) -> String {
    ref_at(path, &waiting_ref(&id.to_hex()))
}

/// The path part of a URL on the test server.
fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    rest[rest.find('/').unwrap()..].to_owned()
}

async fn wait_gone(what: &str, path: &std::path::Path) {
    wait_until(what, Duration::from_secs(30), || {
        let gone = !path.exists();
        async move { gone.then_some(()) }
    })
    .await;
}

async fn a_probe_answers_as_an_empty_repository_and_creates_nothing(frontend: Frontend) {
    let c = Contributor::new(frontend.start()).await;
    let url = c.url();
    for service in ["git-upload-pack", "git-receive-pack"] {
        let r = request(
            &c.server.addr,
            "GET",
            &format!("{}/info/refs?service={service}", path_of(&url)),
            &[],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{service}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some(format!("application/x-{service}-advertisement").as_str()));
    }
    // The real client, both protocol versions (v2 lists refs with a POST to upload-pack).
    for version in ["0", "2"] {
        let listed = c.work.ok(&["-c", &format!("protocol.version={version}"), "ls-remote", &url]);
        assert_eq!(listed, "", "protocol v{version}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = git(dir.path(), &["clone", &url, "empty"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("empty repository"), "{stderr}");
    let npub = c.keys.public_key().to_bech32().unwrap();
    let contributor_dir = c.server.prs_path(&c.keys.public_key(), "x").parent().unwrap().to_path_buf();
    assert!(!contributor_dir.exists(), "a probe must not create anything on disk");
    // Malformed /prs/ paths and the browser page are not served.
    for path in [
        "/prs/npub1nope/x.git/info/refs?service=git-upload-pack".to_owned(),
        format!("/prs/{npub}/%2e%2e.git/info/refs?service=git-upload-pack"),
        format!("/prs/{npub}/x/info/refs?service=git-upload-pack"),
        format!("/prs/{npub}/x.git"),
    ] {
        let r = request(&c.server.addr, "GET", &path, &[], b"").await;
        assert_eq!(r.status, 404, "{path}");
    }
    assert!(!contributor_dir.exists());
}

async fn refs_nostr_pushes_are_accepted_and_other_refs_refused_atomically(frontend: Frontend) {
    let c = Contributor::new(frontend.start()).await;
    let commit = c.work.commit("change.txt", b"a contribution");
    let id = EventId::from_byte_array([7; 32]);
    c.push(&c.url(), &commit, &id);
    assert_eq!(waiting(&c.path(), &id), commit, "the ref landed in /prs/<npub>/<d>.git, waiting");
    assert_eq!(nostr_ref(&c.path(), &id), "", "outside the served refs");
    assert_eq!(c.work.ok(&["ls-remote", &c.url()]), "", "empty to fetchers until a pull request matches");

    let out = c.work.fails(&["push", &c.url(), &format!("{commit}:refs/heads/main")]);
    assert!(out.contains("only takes pull request commits at refs/nostr/"), "{out}");
    let out = c.work.fails(&["push", &c.url(), &format!("{commit}:refs/tags/v1")]);
    assert!(out.contains("only takes pull request commits"), "{out}");

    // A mixed push to a fresh /prs/ repository lands nothing at all.
    let fresh = c.url_for("other");
    let other_id = EventId::from_byte_array([8; 32]);
    let out = c.work.fails(&[
        "push",
        &fresh,
        &format!("{commit}:refs/nostr/{}", other_id.to_hex()),
        &format!("{commit}:refs/heads/main"),
    ]);
    assert!(out.contains("refs/heads/main: a /prs/ repository only takes"), "{out}");
    assert!(!c.server.prs_path(&c.keys.public_key(), "other").exists(), "nothing of a refused push stays");
    // and the same mixed push to the existing one changes nothing there
    c.work.fails(&[
        "push",
        &c.url(),
        &format!("{commit}:refs/nostr/{}", other_id.to_hex()),
        &format!("{commit}:refs/heads/main"),
    ]);
    assert_eq!(nostr_ref(&c.path(), &other_id), "");
    let (refs, _) = grasp_tests::git::bare_refs(&c.path());
    assert_eq!(refs.len(), 1, "{refs:?}");
}

async fn pull_requests_naming_prs_are_accepted_and_served_once_their_commit_is_pushed(frontend: Frontend) {
    let mut c = Contributor::new(frontend.start()).await;
    let c1 = c.work.commit("one.txt", b"1");
    let c2 = c.work.commit("two.txt", b"2");
    let c3 = c.work.commit("three.txt", b"3");

    // event first: held, then released by the push
    let pr = c.pull_request(&c1);
    assert_eq!(c.publish(&pr).await, (true, HELD.to_owned()));
    assert!(!c.served(&pr).await);
    c.push(&c.url(), &c1, &pr.id);
    assert!(c.served(&pr).await, "served once its commit is at refs/nostr/<id>");
    let listed = c.work.ok(&["ls-remote", &c.url()]);
    assert!(listed.contains(&format!("{c1}\trefs/nostr/{}", pr.id.to_hex())), "{listed}");

    // push first: hidden until the event arrives, then released at once
    let second = c.pull_request(&c2);
    c.push(&c.url(), &c2, &second.id);
    assert!(!c.work.ok(&["ls-remote", &c.url()]).contains(&second.id.to_hex()));
    assert_eq!(c.publish(&second).await, (true, String::new()));
    assert!(c.served(&second).await);
    assert!(c.work.ok(&["ls-remote", &c.url()]).contains(&second.id.to_hex()));

    // a pull request update (1619) the same way
    let update = events::pull_request_update(&c.keys, &c.repo(), &pr, &c3, &c.url());
    assert_eq!(c.publish(&update).await, (true, HELD.to_owned()));
    c.push(&c.url(), &c3, &update.id);
    assert!(c.served(&update).await);

    // the contributor's fetch of the pull request works from the /prs/ URL
    let reader = Workdir::new();
    reader.ok(&["fetch", &c.url(), &format!("refs/nostr/{}", update.id.to_hex())]);
    assert_eq!(reader.rev("FETCH_HEAD"), c3);
    // /prs/ repositories are never announced
    let mut probe = RawClient::connect(&c.server.ws_url()).await;
    assert!(probe.req("anns", &[json!({"kinds": [30617]})]).await.unwrap().is_empty());
}

async fn without_a_matching_prs_clone_tag_grasp01_rejection_stands(frontend: Frontend) {
    let mut c = Contributor::new(frontend.start()).await;
    let commit = c.work.commit("x", b"x");
    let other_npub = Keys::generate().public_key().to_bech32().unwrap();
    let own_npub = c.keys.public_key().to_bech32().unwrap();
    let base = c.server.http_url();
    for clone in [
        "http://127.0.0.1:1/somewhere.git".to_owned(),
        format!("{base}/prs/{other_npub}/{D}.git"),
        format!("{base}/prs/{own_npub}/not-tagged.git"),
        format!("{base}/{own_npub}/{D}.git"),
    ] {
        let pr = events::pull_request(&c.keys, &c.repo(), &commit, &clone);
        let (ok, message) = c.publish(&pr).await;
        assert!(!ok, "{clone} must not be enough");
        assert!(message.starts_with("blocked: pull request must tag a repository hosted here"), "{message}");
        assert!(message.contains("/prs/<your npub>/<identifier>.git"), "{message}");
    }
}

async fn a_push_that_does_not_meet_its_event_is_deleted_or_refused(frontend: Frontend) {
    let mut c = Contributor::new(frontend.start()).await;
    // Three commits keep the three events (same signer, same second) distinct.
    let c1 = c.work.commit("one", b"1");
    let c2 = c.work.commit("two", b"2");
    let c3 = c.work.commit("three", b"3");
    let stranger = Keys::generate();
    let strangers_url = c.server.prs_url(&stranger.public_key(), D);
    let strangers_path = c.server.prs_path(&stranger.public_key(), D);
    let other_d_path = c.server.prs_path(&c.keys.public_key(), "elsewhere");

    // git first: a ref that does not meet its event is deleted when the event arrives
    let by_signer = c.pull_request(&c1);
    c.push(&strangers_url, &c1, &by_signer.id);
    assert_eq!(waiting(&strangers_path, &by_signer.id), c1);
    assert_eq!(c.publish(&by_signer).await, (true, HELD.to_owned()), "the event waits for its own URL");
    assert_eq!(waiting(&strangers_path, &by_signer.id), "", "signer is not the URL npub: deleted");
    assert_eq!(nostr_ref(&strangers_path, &by_signer.id), "", "and not served either");
    assert!(!strangers_path.exists(), "and the emptied /prs/ repository is removed");

    let by_identifier = c.pull_request(&c2);
    c.push(&c.url_for("elsewhere"), &c2, &by_identifier.id);
    assert_eq!(c.publish(&by_identifier).await, (true, HELD.to_owned()));
    assert_eq!(nostr_ref(&other_d_path, &by_identifier.id), "", "URL identifier not tagged: deleted");
    assert_eq!(waiting(&other_d_path, &by_identifier.id), "");

    let by_commit = c.pull_request(&c3);
    c.push(&c.url(), &c2, &by_commit.id);
    assert_eq!(c.publish(&by_commit).await, (true, HELD.to_owned()));
    assert_eq!(nostr_ref(&c.path(), &by_commit.id), "", "pushed tip is not 'c': deleted");
    assert_eq!(waiting(&c.path(), &by_commit.id), "");
    for event in [&by_signer, &by_identifier, &by_commit] {
        assert!(!c.served(event).await, "an event whose push did not meet it is not served");
    }

    // event first: the same pushes are refused with the reason
    let out = c.push_fails(&strangers_url, &c1, &by_signer.id);
    assert!(out.contains("signed by another key"), "{out}");
    let out = c.push_fails(&c.url_for("elsewhere"), &c2, &by_identifier.id);
    assert!(out.contains("tags no repository named 'elsewhere'"), "{out}");
    let out = c.push_fails(&c.url(), &c2, &by_commit.id);
    assert!(out.contains("'c' tag"), "{out}");
    // and the right push still releases it
    c.push(&c.url(), &c3, &by_commit.id);
    assert!(c.served(&by_commit).await);
}

async fn unmatched_refs_and_unmatched_events_expire(frontend: Frontend) {
    let server = frontend.builder().arg("--pr-ref-expiry-secs=2").arg("--purgatory-expiry-secs=2").start();
    let mut c = Contributor::new(server).await;
    let commit = c.work.commit("x", b"x");
    let orphan = EventId::from_byte_array([5; 32]);
    c.push(&c.url(), &commit, &orphan);
    assert_eq!(waiting(&c.path(), &orphan), commit);
    let contributor_dir = c.path().parent().unwrap().to_path_buf();
    wait_gone("the unmatched /prs/ ref is deleted and its repository removed", &contributor_dir).await;

    let pr = c.pull_request(&commit);
    assert_eq!(c.publish(&pr).await, (true, HELD.to_owned()));
    wait_until("the held pull request expires", Duration::from_secs(30), || {
        let empty = c.server.purgatory_list().is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    assert!(!c.served(&pr).await, "never served");
    // a push after expiry is a git-first push again: the event is unknown, the ref hidden
    c.push(&c.url(), &commit, &pr.id);
    assert_eq!(c.work.ok(&["ls-remote", &c.url()]), "");
}

async fn startup_recovery_parks_a_prs_ref_a_crash_left_in_the_served_namespace(frontend: Frontend) {
    let server = frontend.builder().arg("--pr-ref-expiry-secs=3").start();
    let mut c = Contributor::new(server).await;
    let commit = c.work.commit("x", b"x");
    let parked = EventId::from_byte_array([6; 32]);
    c.push(&c.url(), &commit, &parked);
    // As if the server died after git wrote a second ref and before it was recorded, and
    // the record of the first was lost: one ref at refs/nostr/<id>, one waiting, nothing in
    // purgatory.
    let orphan = EventId::from_byte_array([9; 32]);
    c.server.stop();
    git(&c.path(), &["update-ref", &format!("refs/nostr/{}", orphan.to_hex()), &commit]);
    std::fs::remove_dir_all(c.server.data_dir().join("relay").join("purgatory")).unwrap();
    c.server.resume();
    wait_until("recovery parks the ref and records both placeholders", Duration::from_secs(30), || {
        let moved = nostr_ref(&c.path(), &orphan).is_empty() && waiting(&c.path(), &orphan) == commit;
        let listed = c.server.purgatory_list();
        let recorded = [orphan, parked].iter().all(|id| listed.iter().any(|e| e["event_id"] == id.to_hex()));
        async move { (moved && recorded).then_some(()) }
    })
    .await;
    assert_eq!(c.work.ok(&["ls-remote", &c.url()]), "", "nothing waiting is served");
    // ...and they expire like any placeholder: the emptied repository goes.
    let contributor_dir = c.path().parent().unwrap().to_path_buf();
    wait_gone("the recovered placeholders expire and the repository is removed", &contributor_dir).await;
}

async fn prs_repositories_in_the_old_npub_layout_move_to_hex_directories_at_start(frontend: Frontend) {
    let mut c = Contributor::new(frontend.start()).await;
    let commit = c.work.commit("x", b"x");
    let id = EventId::from_byte_array([7; 32]);
    c.push(&c.url(), &commit, &id);
    let hex_path = c.path();
    assert!(hex_path.starts_with(c.server.data_dir().join("repos/prs").join(c.keys.public_key().to_hex())));
    // As an earlier version left it: under the npub.
    c.server.stop();
    let npub_dir = c.server.data_dir().join("repos/prs").join(c.keys.public_key().to_bech32().unwrap());
    std::fs::create_dir_all(&npub_dir).unwrap();
    std::fs::rename(&hex_path, npub_dir.join(hex_path.file_name().unwrap())).unwrap();
    c.server.resume();
    assert!(!npub_dir.exists(), "the old directory is gone");
    assert_eq!(waiting(&hex_path, &id), commit, "the repository and its waiting ref moved back");
}

async fn accepted_prs_refs_are_mirrored_into_the_announced_repository(frontend: Frontend) {
    let mut c = Contributor::new(frontend.start()).await;
    let client = c.server.client().await;
    let repo = host_repository(&c.server, &client, &c.owner, D, &[]).await;
    let hosted_url = c.server.clone_url(&c.owner.public_key(), D);
    let hosted_path = c.server.repo_path(&c.owner.public_key(), D);
    let work = Workdir::clone_from(&hosted_url, &[]);
    let p1 = work.commit("feature", b"1");
    let p2 = work.commit("feature", b"2");

    // git first, to /prs/: the event (GRASP-01 takes it, the repository is hosted) is
    // released at once because its commit is here, and the ref appears in the announced repo
    let git_first = events::pull_request(&c.keys, &repo, &p1, &c.url());
    work.ok(&["push", &c.url(), &format!("{p1}:refs/nostr/{}", git_first.id.to_hex())]);
    assert_eq!(c.publish(&git_first).await, (true, String::new()));
    assert_eq!(nostr_ref(&hosted_path, &git_first.id), p1, "mirrored into the announced repository");

    // event first
    let event_first = events::pull_request(&c.keys, &repo, &p2, &c.url());
    assert_eq!(c.publish(&event_first).await, (true, HELD.to_owned()));
    work.ok(&["push", &c.url(), &format!("{p2}:refs/nostr/{}", event_first.id.to_hex())]);
    assert!(c.served(&event_first).await);
    assert_eq!(nostr_ref(&hosted_path, &event_first.id), p2);
    let listed = work.ok(&["ls-remote", &hosted_url]);
    assert!(listed.contains(&format!("{p2}\trefs/nostr/{}", event_first.id.to_hex())), "{listed}");
    let reader = Workdir::new();
    reader.ok(&["fetch", &hosted_url, &format!("refs/nostr/{}", event_first.id.to_hex())]);
    assert_eq!(reader.rev("FETCH_HEAD"), p2);

    // one way only: the /prs/ repository holds nothing but the contributor's refs
    let (refs, _) = grasp_tests::git::bare_refs(&c.path());
    let names: Vec<&str> = refs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("refs/nostr/")), "{names:?}");
}

async fn a_repository_announced_later_gets_the_pull_requests_accepted_before(frontend: Frontend) {
    let mut c = Contributor::new(frontend.start()).await;
    let base = Workdir::new();
    let root = base.commit("README", b"project");
    c.work.ok(&["fetch", "-q", base.path().to_str().unwrap(), "main"]);
    c.work.ok(&["reset", "-q", "--hard", "FETCH_HEAD"]);
    let feature = c.work.commit("feature", b"contribution");
    let pr = c.pull_request(&feature);
    c.push(&c.url(), &feature, &pr.id);
    assert_eq!(c.publish(&pr).await, (true, String::new()), "accepted through /prs/ alone");

    // The owner moves the repository here afterwards.
    let addr = c.server.addr.clone();
    assert_eq!(c.publish(&events::announcement(&c.owner, D, &addr, &[])).await, (true, HELD.to_owned()));
    let state = events::state(&c.owner, D, &[("refs/heads/main", &root)], Some("main"));
    assert_eq!(c.publish(&state).await, (true, HELD.to_owned()));
    base.ok(&["push", &c.server.clone_url(&c.owner.public_key(), D), "main"]);
    let hosted = c.server.repo_path(&c.owner.public_key(), D);
    assert_eq!(
        nostr_ref(&hosted, &pr.id),
        feature,
        "the earlier pull request is offered in the new repository"
    );
}

async fn switched_off_prs_answers_404_and_its_events_are_refused(frontend: Frontend) {
    let mut c = Contributor::new(frontend.builder().arg("--prs-hosting=false").start()).await;
    let r = request(
        &c.server.addr,
        "GET",
        &format!("{}/info/refs?service=git-upload-pack", path_of(&c.url())),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);
    let commit = c.work.commit("x", b"x");
    c.push_fails(&c.url(), &commit, &EventId::from_byte_array([1; 32]));
    let (ok, message) = c.publish(&c.pull_request(&commit)).await;
    assert!(
        !ok && message.starts_with("blocked: pull request must tag a repository hosted here"),
        "{message}"
    );
    assert!(!message.contains("GRASP-06"), "{message}");
    let nip11 = c.server.nip11().await;
    assert_eq!(nip11["supported_grasps"], json!(["GRASP-01"]));

    let on = frontend.start().nip11().await;
    assert!(on["supported_grasps"].as_array().unwrap().contains(&json!("GRASP-06")), "{on}");
    assert!(on["repo_acceptance_criteria"].as_str().unwrap().contains("/prs/<signer npub>/<identifier>.git"));
}

async fn prs_pushes_are_size_capped(frontend: Frontend) {
    let c = Contributor::new(frontend.builder().arg("--prs-max-push-size=4096").start()).await;
    // incompressible content (xorshift), well over the cap
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let commit = c.work.commit("big.bin", &noise);
    let out = c.push_fails(&c.url(), &commit, &EventId::from_byte_array([3; 32]));
    assert!(out.contains("prs_max_push_size"), "{out}");
    assert!(!c.path().exists(), "nothing of the refused push stays");
}

async fn prs_pushes_are_rate_limited_per_client_address(frontend: Frontend) {
    let c = Contributor::new(frontend.builder().arg("--prs-pushes-per-minute=2").start()).await;
    let commit = c.work.commit("x", b"x");
    c.push(&c.url(), &commit, &EventId::from_byte_array([1; 32]));
    c.push(&c.url_for("other"), &commit, &EventId::from_byte_array([2; 32]));
    let out = c.push_fails(&c.url(), &commit, &EventId::from_byte_array([3; 32]));
    assert!(out.contains("rate-limited: too many pushes to /prs/ from your address"), "{out}");
    assert_eq!(nostr_ref(&c.path(), &EventId::from_byte_array([3; 32])), "");
    // probes and fetches are not pushes, and announced repositories have their own rules
    assert_eq!(c.work.ok(&["ls-remote", &c.url_for("third")]), "");
    let client = c.server.client().await;
    host_repository(&c.server, &client, &c.owner, D, &[]).await;
}

frontend_tests!(
    a_probe_answers_as_an_empty_repository_and_creates_nothing,
    refs_nostr_pushes_are_accepted_and_other_refs_refused_atomically,
    pull_requests_naming_prs_are_accepted_and_served_once_their_commit_is_pushed,
    without_a_matching_prs_clone_tag_grasp01_rejection_stands,
    a_push_that_does_not_meet_its_event_is_deleted_or_refused,
    unmatched_refs_and_unmatched_events_expire,
    startup_recovery_parks_a_prs_ref_a_crash_left_in_the_served_namespace,
    prs_repositories_in_the_old_npub_layout_move_to_hex_directories_at_start,
    accepted_prs_refs_are_mirrored_into_the_announced_repository,
    a_repository_announced_later_gets_the_pull_requests_accepted_before,
    switched_off_prs_answers_404_and_its_events_are_refused,
    prs_pushes_are_size_capped,
    prs_pushes_are_rate_limited_per_client_address,
);
