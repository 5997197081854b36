//! Keeping hosted repositories fast to serve.
//!
//! A push stores its pack as received (or explodes small pushes into loose objects), with no
//! reachability bitmap, so the next clones spend their time counting objects. After a push
//! we run `git repack --geometric=2 --write-midx --write-bitmap-index` in the background:
//! it rolls small packs and loose objects together, leaves large packs alone, and writes a
//! multi-pack bitmap, then packs the refs (a repository with thousands of loose refs, such
//! as pull request refs waiting for their event, reads every one of them per
//! advertisement), and writes the commit-graph (`--reachable --split`, added to in layers),
//! which pack-objects and negotiation use to walk history without parsing every commit.
//! The same runs after a hunted fetch. One repack runs at a time per server, and a repository waiting for one
//! is not queued twice.
//!
//! The repack waits for a quiet period after the repository's last push: a burst of pushes
//! (a client pushing branch after branch, a forge's mirror job) costs one repack at its end
//! instead of one per push competing with the next push for the CPU. Clones in between are
//! served correctly, only without the new bitmap.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Semaphore;

use crate::cluster::ClusterLocks;
use crate::metrics::Metrics;

/// Background repository housekeeping.
#[derive(Debug, Clone)]
pub struct Maintenance {
    slots: Arc<Semaphore>,
    /// Repositories waiting for a repack, with the time of their last push.
    pending: Arc<Mutex<HashMap<PathBuf, Instant>>>,
    quiet_period: Duration,
    metrics: Metrics,
    /// On a cluster: so one node repacks a repository at a time.
    cluster: Option<ClusterLocks>,
}

/// Longest a background repack may run; a repack that takes longer is killed (the
/// repository stays as it was: git writes packs before it deletes anything).
const REPACK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Memory one repack thread may use for its delta search window.
const REPACK_WINDOW_MEMORY: &str = "pack.windowMemory=256m";

/// How long a repository must go without a push before it is repacked.
pub const QUIET_PERIOD: Duration = Duration::from_secs(2);

impl Maintenance {
    /// The same housekeeping on one node of a cluster (see [`ClusterLocks`]).
    pub fn with_cluster(mut self, locks: ClusterLocks) -> Self {
        self.cluster = Some(locks);
        self
    }

    /// Housekeeping that runs at most one repack at a time.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(1)),
            pending: Arc::default(),
            quiet_period: QUIET_PERIOD,
            metrics,
            cluster: None,
        }
    }

    /// Schedules a repack of the repository at `path` once it has had no push for the
    /// quiet period (a repository already waiting has its wait restarted).
    pub fn schedule(&self, path: PathBuf) {
        let now = Instant::now();
        if self.pending.lock().expect("pending poisoned").insert(path.clone(), now).is_some() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.wait_until_quiet(&path).await;
            let _slot = this.slots.acquire().await.expect("semaphore never closed");
            // Another node repacking it now covers this push too.
            let _repacking = match &this.cluster {
                Some(locks) => match locks.try_lock(&format!("repack:{}", path.display())).await {
                    Ok(Some(guard)) => Some(guard),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "repacking without the cluster lock");
                        None
                    }
                },
                None => None,
            };
            let git = |args: &[&str]| {
                let mut cmd = tokio::process::Command::new("git");
                super::dies_with_server_in_own_group(&mut cmd)
                    .arg("-C")
                    .arg(&path)
                    // Delta search memory is bounded per thread, whatever the objects.
                    .args(["-c", REPACK_WINDOW_MEMORY])
                    .args(args)
                    .env("GIT_TERMINAL_PROMPT", "0")
                    .kill_on_drop(true);
                cmd
            };
            let timed = |mut cmd: tokio::process::Command| async move {
                match tokio::time::timeout(REPACK_TIMEOUT, cmd.output()).await {
                    Ok(output) => output,
                    // Dropping the child kills it (kill_on_drop), its group too.
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("gave up after {} s", REPACK_TIMEOUT.as_secs()),
                    )),
                }
            };
            let mut output =
                timed(git(&["repack", "-d", "-q", "--geometric=2", "--write-midx", "--write-bitmap-index"]))
                    .await;
            if matches!(&output, Ok(out) if out.status.success()) {
                output = timed(git(&["pack-refs", "--all", "--prune"])).await;
            }
            if matches!(&output, Ok(out) if out.status.success()) {
                output =
                    timed(git(&["commit-graph", "write", "--reachable", "--split", "--no-progress"])).await;
            }
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

    /// Sleeps until `path` has had no push for the quiet period, then takes it off the
    /// waiting list (a push after that schedules a new repack).
    async fn wait_until_quiet(&self, path: &PathBuf) {
        loop {
            let last_push = {
                let mut pending = self.pending.lock().expect("pending poisoned");
                let last_push = pending.get(path).copied().unwrap_or_else(Instant::now);
                if last_push + self.quiet_period <= Instant::now() {
                    pending.remove(path);
                    return;
                }
                last_push
            };
            tokio::time::sleep_until(last_push + self.quiet_period).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(maintenance: &Maintenance, path: &PathBuf) -> bool {
        maintenance.pending.lock().unwrap().contains_key(path)
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_during_the_quiet_period_restarts_the_wait() {
        let maintenance = Maintenance::new(Metrics::new());
        let path = PathBuf::from("/nonexistent/repository.git");
        maintenance.schedule(path.clone());
        tokio::time::sleep(QUIET_PERIOD / 2).await;
        maintenance.schedule(path.clone());
        tokio::time::sleep(QUIET_PERIOD * 3 / 4).await;
        assert!(waiting(&maintenance, &path), "the second push restarted the quiet period");
        tokio::time::sleep(QUIET_PERIOD / 2).await;
        assert!(!waiting(&maintenance, &path), "quiet for a full period: repack started");
    }
}
