//! Keeping hosted repositories fast to serve.
//!
//! A push stores its pack as received (or explodes small pushes into loose objects), with no
//! reachability bitmap, so the next clones spend their time counting objects. After a push
//! we run `git repack --geometric=2 --write-midx --write-bitmap-index` in the background:
//! it rolls small packs and loose objects together, leaves large packs alone, and writes a
//! multi-pack bitmap. One repack runs at a time per server, and a repository waiting for
//! one is not queued twice.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Background repository housekeeping.
#[derive(Debug, Clone)]
pub struct Maintenance {
    slots: Arc<Semaphore>,
    pending: Arc<Mutex<HashSet<PathBuf>>>,
    metrics: Metrics,
}

impl Maintenance {
    /// Housekeeping that runs at most one repack at a time.
    pub fn new(metrics: Metrics) -> Self {
        Self { slots: Arc::new(Semaphore::new(1)), pending: Arc::default(), metrics }
    }

    /// Schedules a repack of the repository at `path` (no-op if one is already waiting).
    pub fn schedule(&self, path: PathBuf) {
        if !self.pending.lock().expect("pending poisoned").insert(path.clone()) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _slot = this.slots.acquire().await.expect("semaphore never closed");
            this.pending.lock().expect("pending poisoned").remove(&path);
            let output = super::dies_with_server(&mut tokio::process::Command::new("git"))
                .arg("-C")
                .arg(&path)
                .args(["repack", "-d", "-q", "--geometric=2", "--write-midx", "--write-bitmap-index"])
                .env("GIT_TERMINAL_PROMPT", "0")
                .output()
                .await;
            match output {
                Ok(out) if out.status.success() => {
                    this.metrics.repacks.with_label_values(&["ok"]).inc();
                    tracing::debug!(path = %path.display(), "repository repacked");
                }
                Ok(out) => {
                    this.metrics.repacks.with_label_values(&["error"]).inc();
                    tracing::warn!(path = %path.display(), stderr = %String::from_utf8_lossy(&out.stderr).trim(), "repack failed");
                }
                Err(e) => {
                    this.metrics.repacks.with_label_values(&["error"]).inc();
                    tracing::warn!(path = %path.display(), error = %e, "repack could not start");
                }
            }
        });
    }
}
