//! `grasp-hook` overhead: small pushes through `git daemon` to a repository with the hooks
//! installed (and a grasp node answering them) against the same pushes to a repository of
//! the same daemon with no hook.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use grasp_tests::events;
use grasp_tests::git::Workdir;
use grasp_tests::server::binary;
use grasp_tests::stock::{grasp_hook, GitDaemon};
use grasp_tests::{publish, RawClient};
use nostr_sdk::prelude::*;

use crate::gitbench::main_state;
use crate::procs::grasp_server;
use crate::report::{Report, Row};
use crate::stats::{secs, Samples};

fn push(work: &Workdir, url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = Command::new("git")
        .current_dir(work.path())
        .args(["push", "-q", url, "main"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("git push to {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

/// Runs the installed pre-receive hook by hand, as git would, with one ref update.
fn pre_receive_alone(repo: &Path, socket: &Path, line: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = Command::new(binary("grasp-hook"))
        .args(["pre-receive", "--socket"])
        .arg(socket)
        .arg("--root")
        .arg(repo.parent().and_then(Path::parent).context("repository layout")?)
        .current_dir(repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(line.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("pre-receive refused: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

/// Push latency with and without the hooks, and the pre-receive hook run alone.
pub async fn hook(report: &mut Report, pushes: usize) -> anyhow::Result<()> {
    let server = grasp_server(&[]);
    let root = server.data_dir().join("repos");
    let daemon = GitDaemon::start(&root);
    let client = server.client().await;
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, "hooked", &server.addr, &[]))
        .await
        .map_err(anyhow::Error::msg)?;
    let hooked = server.repo_path(&owner.public_key(), "hooked");
    let socket = server.local_api_socket();
    let (ok, out) =
        grasp_hook(&["install", &hooked.display().to_string(), "--socket", &socket.display().to_string()]);
    anyhow::ensure!(ok, "grasp-hook install failed: {out}");
    let plain = root.join("plain").join("baseline.git");
    let init = Command::new("git").arg("init").arg("-q").arg("--bare").arg(&plain).status()?;
    anyhow::ensure!(init.success(), "git init --bare failed");

    let (hooked_url, plain_url) = (daemon.url(&hooked), daemon.url(&plain));
    let (hooked_work, plain_work) = (Workdir::new(), Workdir::new());
    let mut ours = Samples::default();
    let mut theirs = Samples::default();
    let mut alone = Samples::default();
    let base = Timestamp::now().as_secs();
    for i in 0..=pushes {
        let commit = hooked_work.commit("file.txt", format!("change {i}\n").as_bytes());
        let state = main_state(&owner, "hooked", &commit, base + i as u64 + 1);
        let (accepted, msg) = raw.publish(&events::json(&state)).await;
        anyhow::ensure!(accepted, "state refused: {msg}");
        // The hook alone, for the pushed update (before the push, so it is still pending).
        let old = if i == 0 { "0".repeat(40) } else { hooked_work.rev("HEAD~1") };
        let line = format!("{old} {commit} refs/heads/main\n");
        let hook_time = pre_receive_alone(&hooked, &socket, &line)?;
        let t = push(&hooked_work, &hooked_url)?;
        plain_work.commit("file.txt", format!("change {i}\n").as_bytes());
        let n = push(&plain_work, &plain_url)?;
        if i > 0 {
            // the first push of each creates the branch: warm-up
            ours.push_duration(t);
            theirs.push_duration(n);
            alone.push_duration(hook_time);
        }
    }
    let overhead = ours.median() - theirs.median();
    report.add(Row {
        scenario: format!("git daemon push with grasp-hook ({pushes} pushes)"),
        ours: format!("p50 {}, p95 {}", secs(ours.median()), secs(ours.percentile(95.0))),
        baseline: format!("no hook p50 {}, p95 {}", secs(theirs.median()), secs(theirs.percentile(95.0))),
        comparison: format!("p50 overhead {:+.1} ms", overhead * 1000.0),
        target: "p50 overhead ≤ 15 ms".into(),
        met: Some(overhead <= 0.015),
    });
    report.add(Row {
        scenario: "grasp-hook pre-receive alone (process start + node decision)".into(),
        ours: format!("p50 {}, p95 {}", secs(alone.median()), secs(alone.percentile(95.0))),
        baseline: "—".into(),
        comparison: "—".into(),
        target: "reported".into(),
        met: None,
    });
    Ok(())
}
