//! The servers under test: grasp-server and grasp-proxy (release builds) and the
//! nostr-relay-builder baseline relay. nginx + fcgiwrap + git http-backend come from
//! `grasp_tests::upstream`. Every process runs in its own process group, killed with
//! everything it spawned when its handle is dropped: nothing outlives the run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use grasp_tests::process::ProcessGroup;
use grasp_tests::server::binary;
use grasp_tests::upstream::free_port;
use grasp_tests::{Frontend, TestServer};
use tempfile::TempDir;

/// A server of `frontend` tuned for measuring: no rate limits, quiet logs, and held events
/// that outlast a slow 1 GiB push on a busy machine (the servers run in test mode). The
/// push extension is half the expiry, as in the defaults (15 of 30 minutes), so a push
/// right after its state extends nothing, as on a production server.
fn tuned(frontend: Frontend, extra: &[&str]) -> TestServer {
    let mut builder = frontend
        .builder()
        .arg("--events-per-minute=0")
        .arg("--pushes-per-minute=0")
        .arg("--purgatory-expiry-secs=3600")
        .arg("--push-extension-secs=1800")
        .env("GRASP_LOG_LEVEL", "warn");
    for arg in extra {
        builder = builder.arg(*arg);
    }
    builder.start()
}

/// grasp-server.
pub fn grasp_server(extra: &[&str]) -> TestServer {
    tuned(Frontend::Inline, extra)
}

/// grasp-proxy in front of its own nginx + fcgiwrap + git http-backend.
pub fn grasp_proxy(extra: &[&str]) -> TestServer {
    tuned(Frontend::Proxy, extra)
}

/// The nostr-relay-builder 0.44 baseline relay on LMDB.
pub struct RelayBuilderBaseline {
    _child: ProcessGroup,
    _dir: TempDir,
    /// `ws://127.0.0.1:<port>`
    pub url: String,
}

impl RelayBuilderBaseline {
    /// Starts it with an empty LMDB store.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut child = ProcessGroup::spawn(
            Command::new(binary("relay-builder-baseline"))
                .arg(dir.path().join("lmdb"))
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )?;
        let stdout = child.child().stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30)).context("relay-builder baseline did not start")?;
        Ok(Self { _child: child, _dir: dir, url: format!("ws://127.0.0.1:{port}") })
    }
}
