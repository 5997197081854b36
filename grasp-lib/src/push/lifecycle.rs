//! One receive-pack request from its first byte to its metrics. Every frontend that takes a
//! push over HTTP drives the same steps in the same order, whoever runs git: the inline
//! server ([`Grasp::receive_pack`]) and grasp-proxy in front of its upstream.
//!
//! 1. [`Grasp::begin_push`] when the request arrives;
//! 2. [`PushLifecycle::read_commands`]: only the command section, before anything else;
//! 3. [`PushLifecycle::admit`]: the decision ([`Grasp::admit_push`]); a refusal comes back
//!    as the answer to send (after the frontend drained the body, so the client reads it);
//! 4. git receives the pack (size-capped: [`PushLifecycle::too_large`]; a client that
//!    stops sending: [`PushLifecycle::stalled`]);
//! 5. [`PushLifecycle::landed`] with the updates in effect: the git-data step;
//! 6. the metrics, once, when the lifecycle is dropped, with the outcome the steps set
//!    (an exit nobody marked counts as an error).

use std::net::IpAddr;
use std::time::Instant;

use tokio::io::AsyncRead;

use super::answers::{drain_allowance, read_push_commands, rejection, too_large, ReceivePackError};
use crate::authorization::PushDecision;
use crate::cluster::ClusterGuard;
use crate::git::pktline::{PushCommands, RefUpdate};
use crate::git::{OperationStatus, RepoRef};
use crate::hosting::ProcessReport;
use crate::Grasp;

/// What [`PushLifecycle::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// Let git receive the pack.
    Go,
    /// Refused: send this answer (a report `git push` prints) once the body is drained.
    Refused(Vec<u8>),
}

/// One push in flight; see the module documentation. Dropping it counts it in the metrics.
#[derive(Debug)]
pub struct PushLifecycle {
    grasp: Grasp,
    repo: RepoRef,
    client: IpAddr,
    started: Instant,
    /// The bytes of the request read before the decision.
    command_bytes: u64,
    status: OperationStatus,
    bytes_in: u64,
    bytes_out: u64,
    /// On a cluster: this repository's write lock, from the decision until the git-data
    /// step ran (so no other node decides against the same held state meanwhile).
    write_lock: Option<ClusterGuard>,
}

impl Grasp {
    /// Begins a push to `repo` from `client` (the address pushes and placeholders are
    /// bounded by).
    pub fn begin_push(&self, repo: &RepoRef, client: IpAddr) -> PushLifecycle {
        PushLifecycle {
            grasp: self.clone(),
            repo: repo.clone(),
            client,
            started: Instant::now(),
            command_bytes: 0,
            status: OperationStatus::Error,
            bytes_in: 0,
            bytes_out: 0,
            write_lock: None,
        }
    }
}

impl PushLifecycle {
    /// The repository pushed to.
    pub fn repo(&self) -> &RepoRef {
        &self.repo
    }

    /// The largest push this repository accepts ([`Grasp::push_size_limit`]).
    pub fn limit(&self) -> u64 {
        self.grasp.push_size_limit(&self.repo)
    }

    /// How much of a refused body to read and discard before answering.
    pub fn drain_allowance(&self) -> u64 {
        drain_allowance(self.limit())
    }

    /// Reads the command section from `body`: the commands and the bytes read past them (the
    /// start of the pack, which belongs to git). A malformed section counts as a bad request,
    /// a client that stops sending as a stall.
    pub async fn read_commands<R: AsyncRead + Unpin>(
        &mut self,
        body: &mut R,
    ) -> Result<(PushCommands, Vec<u8>), ReceivePackError> {
        match read_push_commands(body).await {
            Ok((commands, leftover)) => {
                self.command_bytes = (commands.raw.len() + leftover.len()) as u64;
                Ok((commands, leftover))
            }
            Err(ReceivePackError::ClientStalled(reason)) => Err(self.stalled(reason)),
            Err(e) => {
                self.status = OperationStatus::BadRequest;
                Err(e)
            }
        }
    }

    /// The request bytes read before the decision, when the frontend counts them itself
    /// (as received, before decoding).
    pub fn received(&mut self, bytes: u64) {
        self.command_bytes = bytes;
    }

    /// Decides about the push ([`Grasp::admit_push`]).
    pub async fn admit(&mut self, commands: &PushCommands) -> Result<Admitted, ReceivePackError> {
        self.write_lock = self.grasp.hosting().cluster_lock(&format!("push:{}", self.repo)).await;
        match self.grasp.admit_push(&self.repo, &commands.updates, Some(self.client)).await {
            Ok(PushDecision::Authorized { .. }) => Ok(Admitted::Go),
            Ok(PushDecision::Rejected { reason, .. }) => {
                let answer = rejection(commands, &reason);
                self.finish(OperationStatus::Rejected, self.command_bytes, answer.len() as u64);
                Ok(Admitted::Refused(answer))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The answer to a push that went over [`PushLifecycle::limit`] (nothing of it landed).
    pub fn too_large(&mut self, commands: &PushCommands) -> Vec<u8> {
        let limit = self.limit();
        tracing::info!(repo = %self.repo, limit, "push refused: too large");
        let answer = too_large(commands, &self.repo, limit);
        self.finish(OperationStatus::Rejected, limit, answer.len() as u64);
        answer
    }

    /// The client stopped sending its push for longer than `body_idle_timeout_secs`:
    /// counted (`grasp_client_timeouts_total{stalled="body_idle"}`), and the error to answer.
    pub fn stalled(&mut self, reason: String) -> ReceivePackError {
        tracing::info!(repo = %self.repo, %reason, "push aborted: the client stalled");
        self.grasp.metrics().timeouts.with_label_values(&["body_idle"]).inc();
        self.finish(OperationStatus::Error, 0, 0);
        ReceivePackError::ClientStalled(reason)
    }

    /// Git stored the push, and `updates` are in effect: the git-data step
    /// ([`Grasp::push_received`]).
    pub async fn landed(&self, updates: &[RefUpdate]) -> ProcessReport {
        self.grasp.push_received(&self.repo, updates, Some(self.client)).await
    }

    /// How the push ended and the body bytes that went in and out, for the metrics.
    pub fn finish(&mut self, status: OperationStatus, bytes_in: u64, bytes_out: u64) {
        (self.status, self.bytes_in, self.bytes_out) = (status, bytes_in, bytes_out);
    }
}

impl Drop for PushLifecycle {
    fn drop(&mut self) {
        self.grasp.record_push(&self.repo, self.status, self.started, self.bytes_in, self.bytes_out);
    }
}
