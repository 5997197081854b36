//! Crash injection: the server dies at random moments of pushes and event ingestion and is
//! started again on the same data, round after round. After every restart:
//!
//! - every repository passes `git fsck`;
//! - no event that got `OK true` is missing: it is served, or held in purgatory (for
//!   replaceable events: the newest acknowledged version, or a newer one);
//! - purgatory and refs agree: no held state or pull request whose git data is in its
//!   repository (a push whose refs landed is processed at start), every repository follows
//!   its newest served state when it has the objects, every unknown `refs/nostr/<id>` ref
//!   has a placeholder;
//! - the server serves normally (the next round pushes and publishes again, and at the end
//!   every repository clones).
//!
//! How the server dies is chosen by a seeded RNG: a named crash point (`FAILPOINTS`, see
//! `grasp_lib::crash`: during receive-pack, between the ref update and the git-data step,
//! during a purgatory journal write, between storing a released event and forgetting it,
//! mid-alignment, before an `OK`), or a `SIGKILL` of the process group after a random delay.
//!
//! `GRASP_CRASH_ROUNDS` sets the number of rounds (default 12; the full run is 50) and
//! `GRASP_CRASH_SEED` the seed (default: random; it is printed, and named in every failure).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use ::rand::rngs::StdRng;
use ::rand::{Rng, SeedableRng};
use grasp_tests::events;
use grasp_tests::git::{bare_refs, git, Workdir};
use grasp_tests::process::ProcessGroup;
use grasp_tests::procfs::{self, working_in};
use grasp_tests::{host_repository, wait_until, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};

/// The crash points of `grasp_lib::crash`.
const POINTS: &[&str] = &[
    "push-while-receiving",
    "push-after-receive-pack",
    "purgatory-journal-torn",
    "release-after-store",
    "align-before-record",
    "ingest-before-ok",
];

/// A hosted repository and a clone to push from.
struct Repo {
    owner: Keys,
    identifier: String,
    work: Workdir,
}

impl Repo {
    /// A state pointing `main` at `commit`, signed at `at`.
    fn state(&self, commit: &str, at: Timestamp) -> Event {
        events::state_at(&self.owner, &self.identifier, &[("refs/heads/main", commit)], Some("main"), at)
    }

    /// The clone URL on the server at `base` (`http://127.0.0.1:<port>`).
    fn url(&self, base: &str) -> String {
        format!("{base}/{}/{}.git", self.owner.public_key().to_bech32().expect("npub"), self.identifier)
    }
}

/// What a round asks of the server.
#[derive(Debug, Clone, Copy)]
enum Workload {
    /// A state for a new commit, then the push.
    Push,
    /// Issues, a new repository's announcement and a state whose data never comes.
    Events,
    /// A pull request: its `refs/nostr/<id>` push and its event, in either order.
    PullRequest,
}

/// How the server dies in a round.
#[derive(Debug, Clone)]
enum Death {
    /// At a crash point, after passing it `skip` times.
    Point { name: &'static str, skip: u32 },
    /// SIGKILL of the process group after this many milliseconds.
    Kill { after_ms: u64 },
}

/// What the clients do and remember.
struct Traffic {
    rng: StdRng,
    repos: Vec<Repo>,
    /// Strictly increasing `created_at` for states, so "newest" is never a tie.
    clock: u64,
}

impl Traffic {
    fn tick(&mut self) -> Timestamp {
        self.clock += 1;
        Timestamp::from(self.clock)
    }
}

struct World {
    seed: u64,
    server: TestServer,
    traffic: Traffic,
    /// Every event this test signed, by id (acknowledged or not).
    signed: HashMap<EventId, Event>,
    /// Events that got `OK true`.
    acked: Vec<EventId>,
}

impl World {
    fn context(&self, round: usize) -> String {
        format!("seed {} round {round} (rerun with GRASP_CRASH_SEED={})", self.seed, self.seed)
    }

    /// Waits until the server has logged the end of its startup recovery after byte
    /// `since` of its log; returns that log line.
    async fn recovered(&self, since: usize) -> String {
        wait_until("startup recovery finished", Duration::from_secs(60), || async {
            let log = self.server.log();
            log.get(since..)?.lines().find(|l| l.contains("startup recovery finished")).map(str::to_owned)
        })
        .await
    }

    /// Kills the server and starts it again; without failpoints, waits for its startup
    /// recovery and returns what it did.
    async fn restart(&mut self, failpoints: Option<String>) -> String {
        let since = self.server.log().len();
        match &failpoints {
            Some(spec) => self.server.restart_with_env(&[("FAILPOINTS", spec)]),
            None => self.server.restart(),
        }
        match failpoints {
            Some(_) => String::new(),
            None => self.recovered(since).await,
        }
    }
}

async fn publish(url: &str, event: &Event) -> Option<bool> {
    let mut client = RawClient::try_connect_with_headers(url, &[]).await.ok()?;
    client.try_publish(&events::json(event)).await.map(|(ok, _)| ok)
}

/// Runs git in a blocking thread; the result does not matter (the server may die).
async fn git_async(dir: &Path, args: Vec<String>) {
    let dir = dir.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        git(&dir, &args)
    })
    .await;
}

/// One round's client traffic. Returns the events it published with whether each got
/// `OK true`.
async fn workload(world: &mut Traffic, kind: Workload, url: &str, ws: &str) -> Vec<(Event, bool)> {
    let mut published = Vec::new();
    let r = world.rng.random_range(0..world.repos.len());
    match kind {
        Workload::Push => {
            let size = world.rng.random_range(1_000..3_000_000u64);
            let at = world.tick();
            let repo = &world.repos[r];
            grasp_tests::memory::write_random_file(&repo.work.path().join("data.bin"), size);
            let commit = repo.work.commit("note", format!("{at}").as_bytes());
            let state = repo.state(&commit, at);
            let acked = publish(ws, &state).await;
            published.push((state, acked == Some(true)));
            let clone_url = repo.url(url);
            git_async(repo.work.path(), vec!["push".into(), "-q".into(), clone_url, "main".into()]).await;
        }
        Workload::Events => {
            for _ in 0..3 {
                let target = &world.repos[world.rng.random_range(0..world.repos.len())];
                let issue = events::issue(
                    &Keys::generate(),
                    &events::coordinate(&target.owner.public_key(), &target.identifier),
                );
                let acked = publish(ws, &issue).await;
                published.push((issue, acked == Some(true)));
            }
            let newcomer = Keys::generate();
            let addr = url.trim_start_matches("http://");
            let announcement = events::announcement(&newcomer, &format!("new{}", world.clock), addr, &[]);
            let acked = publish(ws, &announcement).await;
            published.push((announcement, acked == Some(true)));
            let at = world.tick();
            let repo = &world.repos[r];
            let never: String =
                (0..40).map(|_| char::from(b"0123456789abcdef"[world.rng.random_range(0..16)])).collect();
            let state = repo.state(&never, at);
            let acked = publish(ws, &state).await;
            published.push((state, acked == Some(true)));
        }
        Workload::PullRequest => {
            let git_first = world.rng.random_bool(0.5);
            let repo = &world.repos[r];
            let clone_url = repo.url(url);
            let base = repo.work.rev("HEAD");
            repo.work.ok(&["checkout", "-q", "-b", "pr", &base]);
            let commit = repo.work.commit("pr.txt", format!("pr {}", world.clock).as_bytes());
            repo.work.ok(&["checkout", "-q", "main"]);
            repo.work.ok(&["branch", "-q", "-D", "pr"]);
            let coordinate = events::coordinate(&repo.owner.public_key(), &repo.identifier);
            let pr = events::pull_request(&Keys::generate(), &coordinate, &commit, &clone_url);
            let refspec = format!("{commit}:refs/nostr/{}", pr.id.to_hex());
            let dir = repo.work.path().to_path_buf();
            if git_first {
                git_async(&dir, vec!["push".into(), "-q".into(), clone_url.clone(), refspec.clone()]).await;
            }
            let acked = publish(ws, &pr).await;
            published.push((pr, acked == Some(true)));
            if !git_first {
                git_async(&dir, vec!["push".into(), "-q".into(), clone_url, refspec]).await;
            }
        }
    }
    published
}

/// REQ on a fresh connection; every event it returns.
async fn req(ws: &str, filter: Value) -> Vec<Event> {
    let mut client = RawClient::connect(ws).await;
    let found = client.req("q", &[filter]).await.expect("REQ answered");
    found.into_iter().map(|v| Event::from_json(v.to_string()).expect("event")).collect()
}

fn has_objects(repo: &Path, oids: &[&String]) -> bool {
    oids.iter().all(|oid| git(repo, &["cat-file", "-e", &format!("{oid}^{{commit}}")]).status.success())
}

fn branches_and_tags(repo: &Path) -> BTreeMap<String, String> {
    bare_refs(repo)
        .0
        .into_iter()
        .filter(|(name, _)| name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
        .collect()
}

fn state_refs(event: &Event) -> BTreeMap<String, String> {
    event
        .tags
        .iter()
        .filter_map(|t| {
            let s = t.as_slice();
            (s.len() >= 2 && (s[0].starts_with("refs/heads/") || s[0].starts_with("refs/tags/")))
                .then(|| (s[0].clone(), s[1].clone()))
        })
        .collect()
}

/// Every invariant of the module documentation, on the server as it is now.
async fn check(world: &World, round: usize) {
    let ctx = world.context(round);
    let ws = world.server.ws_url();
    let repos_root = world.server.data_dir().join("repos");

    // 1. git fsck on every repository on disk.
    let mut on_disk = Vec::new();
    for owner in std::fs::read_dir(&repos_root).into_iter().flatten().flatten() {
        if !owner.file_name().to_string_lossy().starts_with("npub1") {
            continue;
        }
        for repo in std::fs::read_dir(owner.path()).into_iter().flatten().flatten() {
            if repo.file_name().to_string_lossy().ends_with(".git") {
                on_disk.push(repo.path());
            }
        }
    }
    for path in &on_disk {
        let out = git(path, &["fsck", "--no-progress", "--no-dangling"]);
        assert!(
            out.status.success(),
            "{ctx}: git fsck failed in {}:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // 2. Nothing acknowledged is missing.
    let held: Vec<Value> = world.server.purgatory_list();
    let held_ids: HashSet<String> = held
        .iter()
        .filter(|e| e["kind"] != "placeholder")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let acked: Vec<&Event> = world.acked.iter().map(|id| &world.signed[id]).collect();
    let ids: Vec<String> = acked.iter().map(|e| e.id.to_hex()).collect();
    let served: HashSet<String> = req(&ws, json!({"ids": ids})).await.iter().map(|e| e.id.to_hex()).collect();
    let mut newest: HashMap<(u16, PublicKey, String), &Event> = HashMap::new();
    for event in &acked {
        if event.kind.is_addressable() {
            let key =
                (event.kind.as_u16(), event.pubkey, event.tags.identifier().unwrap_or_default().to_owned());
            let slot = newest.entry(key).or_insert(event);
            if event.created_at > slot.created_at {
                *slot = event;
            }
        } else {
            let id = event.id.to_hex();
            assert!(
                served.contains(&id) || held_ids.contains(&id),
                "{ctx}: acknowledged {} {id} is gone",
                event.kind
            );
        }
    }
    for ((kind, author, d), event) in newest {
        let id = event.id.to_hex();
        if served.contains(&id) || held_ids.contains(&id) {
            continue;
        }
        let newer = req(&ws, json!({"kinds": [kind], "authors": [author.to_hex()], "#d": [d]})).await;
        assert!(
            newer.iter().any(|e| e.created_at >= event.created_at),
            "{ctx}: acknowledged kind {kind} {id} ({d}) is gone and nothing newer replaced it"
        );
    }

    // 3. Purgatory and refs agree.
    for entry in &held {
        let id = entry["event_id"].as_str().unwrap();
        let Some(event) = EventId::from_hex(id).ok().and_then(|id| world.signed.get(&id)) else { continue };
        let d = entry["identifier"].as_str().unwrap();
        match entry["kind"].as_str().unwrap() {
            "state" => {
                let path = world.server.repo_path(&event.pubkey, d);
                let refs = state_refs(event);
                assert!(
                    !(path.exists() && has_objects(&path, &refs.values().collect::<Vec<_>>())),
                    "{ctx}: state {id} is still held although {} has its objects",
                    path.display()
                );
            }
            "pull_request" => {
                let commit =
                    event.tags.iter().find(|t| t.as_slice()[0] == "c").map(|t| t.as_slice()[1].clone());
                for repo in &world.traffic.repos {
                    let path = world.server.repo_path(&repo.owner.public_key(), &repo.identifier);
                    let at = bare_refs(&path).0.into_iter().find(|(n, _)| *n == format!("refs/nostr/{id}"));
                    assert!(
                        at.map(|(_, oid)| Some(oid)) != Some(commit.clone()),
                        "{ctx}: pull request {id} is still held although refs/nostr/{id} holds its commit"
                    );
                }
            }
            _ => {}
        }
    }
    let placeholders: HashSet<String> = held
        .iter()
        .filter(|e| e["kind"] == "placeholder")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    for repo in &world.traffic.repos {
        let path = world.server.repo_path(&repo.owner.public_key(), &repo.identifier);
        let states = req(
            &ws,
            json!({"kinds": [30618], "authors": [repo.owner.public_key().to_hex()], "#d": [repo.identifier], "limit": 1}),
        )
        .await;
        if let Some(newest) = states.first() {
            let wanted = state_refs(newest);
            if has_objects(&path, &wanted.values().collect::<Vec<_>>()) {
                assert_eq!(
                    branches_and_tags(&path),
                    wanted,
                    "{ctx}: {} does not follow its newest served state {}",
                    repo.identifier,
                    newest.id
                );
            }
        }
        for (name, _) in bare_refs(&path).0 {
            let Some(id) = name.strip_prefix("refs/nostr/") else { continue };
            let known = held_ids.contains(id)
                || placeholders.contains(id)
                || !req(&ws, json!({"ids": [id]})).await.is_empty();
            assert!(known, "{ctx}: {name} in {} has no event and no placeholder", repo.identifier);
        }
    }
}

#[tokio::test]
async fn crashes_at_random_moments_lose_nothing_acknowledged() {
    let rounds: usize = std::env::var("GRASP_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let seed: u64 =
        std::env::var("GRASP_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(::rand::random);
    eprintln!("crash injection: {rounds} rounds, GRASP_CRASH_SEED={seed}");
    let server = TestServer::builder()
        .arg("--purgatory-expiry-secs=86400")
        .arg("--pr-ref-expiry-secs=86400")
        .arg("--push-extension-secs=86400")
        .start();
    let mut world = World {
        seed,
        server,
        traffic: Traffic {
            rng: StdRng::seed_from_u64(seed),
            repos: Vec::new(),
            clock: Timestamp::now().as_secs(),
        },
        signed: HashMap::new(),
        acked: Vec::new(),
    };
    world.recovered(0).await;
    {
        let client = world.server.client().await;
        for i in 0..3 {
            let owner = Keys::generate();
            let identifier = format!("repo{i}");
            host_repository(&world.server, &client, &owner, &identifier, &[]).await;
            let work = Workdir::clone_from(&world.server.clone_url(&owner.public_key(), &identifier), &[]);
            world.traffic.repos.push(Repo { owner, identifier, work });
        }
        client.disconnect().await;
    }
    // host_repository signs its states "now": later states must be newer.
    world.traffic.clock += 1;

    for round in 0..rounds {
        let rng = &mut world.traffic.rng;
        let kind = [Workload::Push, Workload::Events, Workload::PullRequest][rng.random_range(0..3)];
        let death = if rng.random_bool(0.6) {
            Death::Point { name: POINTS[rng.random_range(0..POINTS.len())], skip: rng.random_range(0..2) }
        } else {
            Death::Kill { after_ms: rng.random_range(0..1500) }
        };
        eprintln!("round {round}: {kind:?}, dies by {death:?}");
        if let Death::Point { name, skip } = &death {
            world.restart(Some(format!("{name}={skip}*off->return"))).await;
        }
        let (url, ws) = (world.server.http_url(), world.server.ws_url());
        let published = match death {
            Death::Kill { after_ms } => {
                let traffic = workload(&mut world.traffic, kind, &url, &ws);
                let mut traffic = std::pin::pin!(traffic);
                tokio::select! {
                    published = &mut traffic => published,
                    () = tokio::time::sleep(Duration::from_millis(after_ms)) => {
                        world.server.stop();
                        traffic.await
                    }
                }
            }
            Death::Point { .. } => workload(&mut world.traffic, kind, &url, &ws).await,
        };
        for (event, acked) in published {
            if acked {
                world.acked.push(event.id);
            }
            world.signed.insert(event.id, event);
        }
        let down_early = world.server.has_exited();
        // Whatever survived the workload dies now.
        world.server.stop();
        let recovery = world.restart(None).await;
        let recovery = recovery.split("startup recovery finished").nth(1).unwrap_or_default().trim();
        eprintln!("  down before the traffic ended: {down_early}; recovery: {recovery}");
        check(&world, round).await;
    }

    // Served normally: every repository clones and is what its newest state says.
    for repo in &world.traffic.repos {
        let url = world.server.clone_url(&repo.owner.public_key(), &repo.identifier);
        let clone = Workdir::clone_from(&url, &[]);
        let path = world.server.repo_path(&repo.owner.public_key(), &repo.identifier);
        assert_eq!(
            clone.rev("HEAD"),
            branches_and_tags(&path)["refs/heads/main"],
            "{}",
            world.context(rounds)
        );
    }
}

/// A killed server takes every git process it started with it, git's own children
/// included. Here a push waits in a slow `pre-receive` hook when the server is SIGKILLed:
/// neither the hook nor receive-pack outlive it (receive-pack would otherwise update the
/// ref once the hook returned). A signal meant for the server that also reaches its child
/// guard (`pkill grasp-server` matches both) changes nothing.
#[tokio::test]
async fn a_killed_server_takes_its_git_processes_with_it() {
    let mut server = TestServer::builder().start();
    let client = server.client().await;
    let owner = Keys::generate();
    host_repository(&server, &client, &owner, "slow-hook", &[]).await;
    let url = server.clone_url(&owner.public_key(), "slow-hook");
    let repo = server.repo_path(&owner.public_key(), "slow-hook");
    let guards = procfs::children_named(server.pid(), "grasp-git-guard");
    assert_eq!(guards.len(), 1, "one child guard: {guards:?}");
    let guard = guards[0];
    let stray = std::process::Command::new("kill").args(["-TERM", &guard.to_string()]).status().unwrap();
    assert!(stray.success());

    let marks = tempfile::tempdir().unwrap();
    let hook_pid = marks.path().join("hook.pid");
    let hook = repo.join("hooks/pre-receive");
    std::fs::write(&hook, format!("#!/bin/sh\necho $$ > '{}'\nexec sleep 300\n", hook_pid.display()))
        .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = bare_refs(&repo);
    let work = Workdir::clone_from(&url, &[]);
    let new = work.commit("note", b"a change");
    let later = Timestamp::from(Timestamp::now().as_secs() + 1);
    grasp_tests::publish(
        &client,
        &events::state_at(&owner, "slow-hook", &[("refs/heads/main", &new)], Some("main"), later),
    )
    .await
    .expect("state held");
    let mut push = ProcessGroup::spawn(
        std::process::Command::new("git")
            .current_dir(work.path())
            .args(["push", &url, "main"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
    .unwrap();
    // Should the guard fail, its group (the hook's) goes when the test ends anyway.
    push.also_kill_group(guard);
    let hook: u32 = wait_until("the pre-receive hook runs", Duration::from_secs(60), || async {
        std::fs::read_to_string(&hook_pid).ok()?.trim().parse().ok()
    })
    .await;
    assert_eq!(procfs::group_of(hook), Some(guard), "git's children are in the guard's group");
    assert!(procfs::is_running(guard), "the guard ended on a stray SIGTERM");

    server.stop();
    wait_until("the hook and receive-pack are gone", Duration::from_secs(30), || async {
        (!procfs::is_running(hook) && working_in(&repo).is_empty()).then_some(())
    })
    .await;
    wait_until("the guard is gone", Duration::from_secs(30), || async {
        (!procfs::is_running(guard)).then_some(())
    })
    .await;
    assert_eq!(bare_refs(&repo), before);
}
