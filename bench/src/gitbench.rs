//! Git scenarios: clone and partial clone against `file://` and nginx + git http-backend,
//! small-push latency, server memory during a 1 GiB push and 20 concurrent clones, and
//! grasp-proxy against the nginx it fronts.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use grasp_tests::events;
use grasp_tests::git::Workdir;
use grasp_tests::memory::{peak_rss, rss, write_random_file};
use grasp_tests::{publish, RawClient, TestServer};
use nostr_sdk::prelude::*;

use crate::corpus;
use grasp_tests::upstream::NginxGit;

use crate::procs::{grasp_proxy, grasp_server};
use crate::report::{Report, Row};
use crate::stats::{mib, secs, Samples};

/// The state a benchmark publishes before a push: `main` at `commit`, HEAD on `main`,
/// signed at `at` (seconds; distinct times order the states).
pub(crate) fn main_state(owner: &Keys, identifier: &str, commit: &str, at: u64) -> Event {
    events::state_at(owner, identifier, &[("refs/heads/main", commit)], Some("main"), Timestamp::from(at))
}

/// Runs git; fails with its stderr.
pub(crate) fn run_git(dir: &Path, args: &[&str]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out =
        Command::new("git").current_dir(dir).args(args).env("GIT_CONFIG_GLOBAL", "/dev/null").output()?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(elapsed)
}

/// Resets the kernel's peak-RSS counter of `pid` (VmHWM), so a later peak belongs to the
/// phase being measured.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Publishes an announcement and a state for `corpus`'s main, and pushes it.
pub(crate) async fn host_corpus(server: &TestServer, corpus: &Path) -> anyhow::Result<String> {
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, "corpus", &server.addr, &[]))
        .await
        .map_err(anyhow::Error::msg)?;
    let head = corpus::head(corpus)?;
    publish(&client, &events::state(&owner, "corpus", &[("refs/heads/main", &head)], Some("main")))
        .await
        .map_err(anyhow::Error::msg)?;
    let url = server.clone_url(&owner.public_key(), "corpus");
    run_git(corpus, &["push", "-q", &url, "main:main"]).context("pushing the corpus")?;
    // The server repacks pushed repositories in the background (bitmaps make clones fast);
    // measure the repository as it serves from then on, like the prepared baselines.
    let packs = server.repo_path(&owner.public_key(), "corpus").join("objects/pack");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let has_bitmap = std::fs::read_dir(&packs)?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".bitmap"));
        if has_bitmap {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the server did not repack the corpus within 10 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(url)
}

/// Clone and partial clone: grasp-server vs `git clone --no-local file://` vs nginx.
pub async fn clone(
    report: &mut Report,
    corpus: &Path,
    corpus_bytes: u64,
    repeat: usize,
) -> anyhow::Result<()> {
    eprintln!("clone: corpus of {} on disk", mib(corpus_bytes as f64));
    let server = grasp_server(&[]);
    let ours = host_corpus(&server, corpus).await?;
    let (nginx, _root) = NginxGit::start_empty()?;
    let copied = Command::new("cp").arg("-r").arg(corpus).arg(nginx.root().join("corpus.git")).status()?;
    anyhow::ensure!(copied.success(), "copying the corpus for nginx failed");
    let file_url = format!("file://{}", corpus.display());
    let targets = [("file", file_url.clone()), ("grasp", ours), ("nginx", nginx.url("corpus.git"))];
    for (label, filter) in [("clone", None), ("partial clone (blob:none)", Some("--filter=blob:none"))] {
        let mut samples = [Samples::default(), Samples::default(), Samples::default()];
        for _ in 0..repeat {
            // Interleaved, so machine noise spreads over all targets alike.
            for (i, (name, url)) in targets.iter().enumerate() {
                let dir = tempfile::tempdir()?;
                let mut args = vec!["clone", "-q", "--no-checkout"];
                if *name == "file" {
                    args.push("--no-local");
                }
                args.extend(filter);
                args.extend([url.as_str(), "c"]);
                samples[i].push_duration(run_git(dir.path(), &args)?);
            }
        }
        let [file, ours, nginx] = samples;
        let vs_file = ours.median() / file.median();
        let vs_nginx = ours.median() / nginx.median();
        report.add(Row {
            scenario: format!("{label} of a {} repository", mib(corpus_bytes as f64)),
            ours: ours.describe(secs),
            baseline: format!("file:// {}; nginx {}", file.describe(secs), nginx.describe(secs)),
            comparison: format!("{vs_file:.2}× file://, {vs_nginx:.2}× nginx"),
            target: if filter.is_none() {
                "≤ 1.10× file://, ≤ 1.0× nginx".into()
            } else {
                "reported".into()
            },
            met: filter.is_none().then_some(vs_file <= 1.10 && vs_nginx <= 1.0),
        });
    }
    Ok(())
}

/// Latency of small authorized pushes (state published first) vs the same pushes to nginx.
pub async fn push(report: &mut Report, pushes: usize) -> anyhow::Result<()> {
    let server = grasp_server(&[]);
    let (nginx, _root) = NginxGit::start_empty()?;
    let (ours, theirs) = push_latencies(&server, &nginx, pushes).await?;
    report.add(push_row(format!("small push latency ({pushes} pushes)"), &ours, &theirs));
    Ok(())
}

/// `pushes` small pushes to `server` (each authorized by a state published just before) and
/// the same pushes straight to `nginx`, interleaved; the first of each is a warm-up.
async fn push_latencies(
    server: &TestServer,
    nginx: &NginxGit,
    pushes: usize,
) -> anyhow::Result<(Samples, Samples)> {
    let client = server.client().await;
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, "small", &server.addr, &[]))
        .await
        .map_err(anyhow::Error::msg)?;
    let url = server.clone_url(&owner.public_key(), "small");
    let ours_work = Workdir::new();
    let direct = nginx.root().join("bench-direct");
    std::fs::create_dir_all(&direct)?;
    run_git(&direct, &["init", "-q", "--bare", "-b", "main", "small.git"])?;
    run_git(&direct.join("small.git"), &["config", "http.receivepack", "true"])?;
    let nginx_url = nginx.url("bench-direct/small.git");
    let nginx_work = Workdir::new();

    let mut ours = Samples::default();
    let mut theirs = Samples::default();
    let base = Timestamp::now().as_secs();
    for i in 0..=pushes {
        let commit = ours_work.commit("file.txt", format!("change {i}\n").as_bytes());
        let state = main_state(&owner, "small", &commit, base + i as u64 + 1);
        let (ok, msg) = raw.publish(&events::json(&state)).await;
        anyhow::ensure!(ok, "state refused: {msg}");
        let t = run_git(ours_work.path(), &["push", "-q", &url, "main"])?;
        nginx_work.commit("file.txt", format!("change {i}\n").as_bytes());
        let n = run_git(nginx_work.path(), &["push", "-q", &nginx_url, "main"])?;
        if i > 0 {
            // the first push of each creates the branch: warm-up
            ours.push_duration(t);
            theirs.push_duration(n);
        }
    }
    Ok((ours, theirs))
}

fn push_row(scenario: String, ours: &Samples, theirs: &Samples) -> Row {
    let overhead = ours.median() - theirs.median();
    Row {
        scenario,
        ours: format!("p50 {}, p95 {}", secs(ours.median()), secs(ours.percentile(95.0))),
        baseline: format!("nginx p50 {}, p95 {}", secs(theirs.median()), secs(theirs.percentile(95.0))),
        comparison: format!("p50 overhead {:+.1} ms", overhead * 1000.0),
        target: "p50 overhead ≤ 10 ms".into(),
        met: Some(overhead <= 0.010),
    }
}

/// Pushes `push_bytes` of random data to a new repository on `server` and returns how much
/// the server process grew over idle at its peak, its idle RSS and how long the push took.
async fn large_push_growth(
    server: &TestServer,
    push_bytes: u64,
    cache: &Path,
) -> anyhow::Result<(u64, u64, Duration)> {
    // The commit first, so the held announcement waits for the push only.
    let blob = cache.join(format!("random-{}.bin", push_bytes >> 20));
    if std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0) != push_bytes {
        write_random_file(&blob, push_bytes);
    }
    let work = Workdir::new();
    std::fs::copy(&blob, work.path().join("random.bin"))?;
    run_git(work.path(), &["-c", "core.looseCompression=0", "add", "random.bin"])?;
    run_git(work.path(), &["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "big"])?;
    let commit = work.rev("HEAD");
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, "big", &server.addr, &[]))
        .await
        .map_err(anyhow::Error::msg)?;
    let url = server.clone_url(&owner.public_key(), "big");
    publish(&client, &events::state(&owner, "big", &[("refs/heads/main", &commit)], Some("main")))
        .await
        .map_err(anyhow::Error::msg)?;
    reset_peak(server.pid());
    let idle = rss(server.pid());
    let took = run_git(work.path(), &["-c", "pack.compression=0", "push", "-q", &url, "main"])?;
    Ok((peak_rss(server.pid()).saturating_sub(idle), idle, took))
}

fn growth_row(scenario: String, (growth, idle, took): (u64, u64, Duration)) -> Row {
    Row {
        scenario,
        ours: format!(
            "+{} over idle {} (push took {})",
            mib(growth as f64),
            mib(idle as f64),
            secs(took.as_secs_f64())
        ),
        baseline: "—".into(),
        comparison: format!("+{}", mib(growth as f64)),
        target: "≤ +64 MiB".into(),
        met: Some(growth <= 64 << 20),
    }
}

/// Peak server memory during a push of `push_bytes` of random data and during 20
/// concurrent clones of the corpus.
pub async fn memory(report: &mut Report, corpus: &Path, push_bytes: u64, cache: &Path) -> anyhow::Result<()> {
    let server = grasp_server(&[]);
    let growth = large_push_growth(&server, push_bytes, cache).await?;
    report.add(growth_row(format!("server RSS during a {} push", mib(push_bytes as f64)), growth));

    let corpus_url = host_corpus(&server, corpus).await?;
    reset_peak(server.pid());
    let idle = rss(server.pid());
    let dirs: Vec<_> = (0..20).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    let started = Instant::now();
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            Command::new("git")
                .current_dir(d.path())
                .args(["clone", "-q", "--no-checkout", &corpus_url, "c"])
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut child in children {
        anyhow::ensure!(child.wait()?.success(), "a concurrent clone failed");
    }
    let took = started.elapsed();
    let growth = peak_rss(server.pid()).saturating_sub(idle);
    report.add(Row {
        scenario: "server RSS during 20 concurrent clones of the corpus".into(),
        ours: format!(
            "+{} over idle {} (all done in {})",
            mib(growth as f64),
            mib(idle as f64),
            secs(took.as_secs_f64())
        ),
        baseline: "—".into(),
        comparison: format!("+{}", mib(growth as f64)),
        target: "reported".into(),
        met: None,
    });
    Ok(())
}

/// grasp-proxy against the nginx + git http-backend it fronts, in one run: the same clone
/// through the proxy and straight from nginx, small pushes through the proxy and straight
/// to nginx, and the proxy's memory during a push of `push_bytes`.
pub async fn proxy(
    report: &mut Report,
    corpus: &Path,
    corpus_bytes: u64,
    repeat: usize,
    pushes: usize,
    push_bytes: u64,
    cache: &Path,
) -> anyhow::Result<()> {
    let server = grasp_proxy(&[]);
    let nginx = server.upstream().context("grasp-proxy runs with its nginx")?;
    let via_proxy = host_corpus(&server, corpus).await?;
    let direct = via_proxy.replacen(&server.http_url(), &nginx.base_url(), 1);
    let targets = [via_proxy, direct];
    let mut samples = [Samples::default(), Samples::default()];
    for _ in 0..repeat {
        // Interleaved, so machine noise spreads over both alike.
        for (i, url) in targets.iter().enumerate() {
            let dir = tempfile::tempdir()?;
            samples[i].push_duration(run_git(dir.path(), &["clone", "-q", "--no-checkout", url, "c"])?);
        }
    }
    let [ours, theirs] = samples;
    let ratio = ours.median() / theirs.median();
    report.add(Row {
        scenario: format!("clone of a {} repository through grasp-proxy", mib(corpus_bytes as f64)),
        ours: ours.describe(secs),
        baseline: format!("nginx direct {}", theirs.describe(secs)),
        comparison: format!("{ratio:.3}× nginx"),
        target: "≤ 1.05× nginx".into(),
        met: Some(ratio <= 1.05),
    });

    let (ours, theirs) = push_latencies(&server, nginx, pushes).await?;
    report.add(push_row(format!("small push latency through grasp-proxy ({pushes} pushes)"), &ours, &theirs));

    let growth = large_push_growth(&server, push_bytes, cache).await?;
    report.add(growth_row(format!("grasp-proxy RSS during a {} push", mib(push_bytes as f64)), growth));
    Ok(())
}
