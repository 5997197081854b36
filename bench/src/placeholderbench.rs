//! Serving with many `refs/nostr/<id>` refs waiting for their event: ref advertisement and
//! clone time of a repository with 0, 1,000 and 20,000 waiting placeholders, as ratios to
//! the one with none, through grasp-server and grasp-proxy. Waiting refs live outside the
//! served namespace behind one hide pattern, so the served repository should not notice
//! them (before, each was a hide pattern of its own and 2,000 broke clones).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use grasp_tests::git::git_ok;
use grasp_tests::{host_repository, Frontend, TestServer};
use nostr_sdk::prelude::*;

use crate::procs::{grasp_proxy, grasp_server};
use crate::report::{Report, Row};
use crate::stats::{secs, Samples};

/// A started server with a hosted repository and `waiting` placeholders in it, packed as the
/// server's background maintenance leaves them.
async fn prepared(frontend: Frontend, waiting: usize) -> anyhow::Result<(TestServer, String)> {
    let mut server = match frontend {
        Frontend::Inline => grasp_server(&[]),
        Frontend::Proxy => grasp_proxy(&[]),
    };
    let owner = Keys::generate();
    let client = server.client().await;
    host_repository(&server, &client, &owner, "waiting", &[]).await;
    let path = server.repo_path(&owner.public_key(), "waiting");
    if waiting > 0 {
        let main = git_ok(&path, &["rev-parse", "refs/heads/main"]);
        // Written directly, past the placeholder caps: refs/nostr refs for unknown events,
        // which startup recovery records and moves out of the served refs.
        let mut input = String::new();
        for i in 0..waiting {
            input.push_str(&format!("create refs/nostr/{i:064x} {main}\n"));
        }
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&path)
            .args(["update-ref", "--stdin"])
            .stdin(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(input.as_bytes())?;
        anyhow::ensure!(child.wait()?.success(), "git update-ref failed");
        server.restart();
        let deadline = Instant::now() + Duration::from_secs(600);
        let loose = path.join("refs/grasp/waiting");
        loop {
            let served = git_ok(&path, &["for-each-ref", "--format=x", "refs/nostr/"]);
            let packed = std::fs::read_dir(&loose).map(|d| d.count() == 0).unwrap_or(true);
            if served.is_empty() && packed {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the {waiting} refs were not parked and packed in time"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // (A restart picks a new port.)
    let url = server.clone_url(&owner.public_key(), "waiting");
    Ok((server, url))
}

/// Median time of `runs` ref advertisements (`GET info/refs?service=git-upload-pack`) and
/// of `runs` fresh clones.
async fn timings(url: &str, runs: usize) -> anyhow::Result<(Samples, Samples)> {
    let http = reqwest::Client::new();
    let advertisement = format!("{url}/info/refs?service=git-upload-pack");
    let (mut advertise, mut clone) = (Samples::default(), Samples::default());
    for _ in 0..runs {
        let started = Instant::now();
        let body = http.get(&advertisement).send().await?.error_for_status()?.bytes().await?;
        advertise.push_duration(started.elapsed());
        anyhow::ensure!(body.len() < 4096, "the advertisement carries {} bytes", body.len());
        let dir = tempfile::tempdir()?;
        let started = Instant::now();
        let out = Command::new("git").current_dir(dir.path()).args(["clone", "-q", url, "c"]).output()?;
        clone.push_duration(started.elapsed());
        anyhow::ensure!(out.status.success(), "clone failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((advertise, clone))
}

/// The scenario: for each frontend, 0, 1,000 and `most` waiting placeholders.
pub async fn placeholders(report: &mut Report, most: usize, runs: usize) -> anyhow::Result<()> {
    for frontend in [Frontend::Inline, Frontend::Proxy] {
        let name = match frontend {
            Frontend::Inline => "grasp-server",
            Frontend::Proxy => "grasp-proxy",
        };
        let mut base: Option<(f64, f64)> = None;
        for waiting in [0, 1_000, most] {
            let (server, url) = prepared(frontend, waiting).await?;
            let (advertise, clone) = timings(&url, runs).await?;
            drop(server);
            let (a, c) = (advertise.median(), clone.median());
            let (a0, c0) = *base.get_or_insert((a, c));
            let (ra, rc) = (a / a0, c / c0);
            report.add(Row {
                scenario: format!("{name}: advertisement and clone with {waiting} waiting placeholders"),
                ours: format!("advertise {}, clone {}", advertise.describe(secs), clone.describe(secs)),
                baseline: format!("0 waiting: advertise {}, clone {}", secs(a0), secs(c0)),
                comparison: format!("{ra:.2}× / {rc:.2}× the 0 case"),
                // The default caps let at most 100 wait in a repository; 1,000 is ten times
                // that, `most` only shows that serving still works far past every cap.
                target: if waiting <= 1_000 {
                    "≤ 1.5× the 0 case".into()
                } else {
                    "works; reported".into()
                },
                met: (waiting <= 1_000).then_some(ra <= 1.5 && rc <= 1.5),
            });
        }
    }
    Ok(())
}
