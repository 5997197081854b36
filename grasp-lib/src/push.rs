//! A push over smart HTTP, end to end: read only the command section, authorize, let git
//! receive the pack (streamed, size-capped), then process the new git data.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::authorization::{self, AuthorizationError, PushBound, PushDecision, PushRequest};
use crate::git::observe::GitOperation;
use crate::git::pktline::{self, PktLineError, PushCommands, RefUpdate};
use crate::git::smart_http::{self, Body, Piped, Service};
use crate::git::{is_zero_oid, refs, RepoRef};
use crate::git_data::ProcessReport;
use crate::limits::{is_idle_timeout, storage, IdleTimeout};
use crate::metrics::{Direction, OperationStatus};
use crate::Grasp;

/// The refusal of a push to `/prs/` over `prs_pushes_per_minute`.
const PRS_RATE_LIMITED: &str =
    "rate-limited: too many pushes to /prs/ from your address; try again in a minute (prs_pushes_per_minute)";

/// The refusal of a push over `pushes_per_minute`.
const PUSH_RATE_LIMITED: &str =
    "rate-limited: too many pushes from your address; try again in a minute (pushes_per_minute)";

/// Largest command section (ref updates) we read before deciding.
const MAX_COMMAND_BYTES: usize = 8 * 1024 * 1024;

/// How much of a refused request body we read and discard so the client gets to read our
/// answer (git only reads the response after sending everything). Beyond this the
/// connection is simply closed.
const MIN_DRAIN_BYTES: u64 = 1024 * 1024 * 1024;

/// Why a receive-pack request got no git answer.
#[derive(Debug, thiserror::Error)]
pub enum ReceivePackError {
    /// The request is not a valid receive-pack request (answer 400).
    #[error("{0}")]
    BadRequest(String),
    /// Something failed on our side (answer 500).
    #[error("{0}")]
    Internal(String),
    /// The client stopped sending in the middle of its request for longer than
    /// `body_idle_timeout_secs`; nothing of the push landed (answer 408, close).
    #[error("{0}")]
    ClientStalled(String),
}

impl From<AuthorizationError> for ReceivePackError {
    fn from(e: AuthorizationError) -> Self {
        ReceivePackError::Internal(format!("could not authorize the push: {e}"))
    }
}

/// Reads and discards what is left of a request body (at most `limit` bytes), so the client
/// finishes sending and reads our answer instead of failing on a closed connection.
async fn drain(body: &mut Body, limit: u64) {
    let _ = tokio::io::copy(&mut body.take(limit), &mut tokio::io::sink()).await;
}

/// Reads only the command section of a receive-pack request from `body`: the commands and
/// the bytes read past them (the start of the pack, which belongs to git). What a frontend
/// needs before it can ask [`Grasp::admit_push`].
pub async fn read_push_commands<R: AsyncRead + Unpin>(
    body: &mut R,
) -> Result<(PushCommands, Vec<u8>), ReceivePackError> {
    pktline::read_push_commands(body, MAX_COMMAND_BYTES).await.map_err(|e| match e {
        PktLineError::Stalled(reason) => ReceivePackError::ClientStalled(reason),
        e => ReceivePackError::BadRequest(e.to_string()),
    })
}

/// How much of a refused push a frontend reads and discards before it answers, so the
/// client (which sends everything before it reads) gets to see the refusal.
pub fn drain_allowance(max_push_size: u64) -> u64 {
    max_push_size.max(MIN_DRAIN_BYTES)
}

/// The answer to a push that [`Grasp::admit_push`] rejected for `reason`, in the form the
/// client asked for, so `git push` prints it next to each ref.
pub fn rejection(commands: &PushCommands, reason: &str) -> Vec<u8> {
    smart_http::rejection_response(commands, &format!("rejected by GRASP: {reason}"))
}

/// The answer to a push to `repo` over its size limit ([`Grasp::push_size_limit`]).
pub fn too_large(commands: &PushCommands, repo: &RepoRef, limit: u64) -> Vec<u8> {
    let option = if repo.is_prs() { "prs_max_push_size" } else { "max_push_size" };
    let reason = format!("push is larger than the {limit} bytes this server accepts ({option})");
    smart_http::rejection_response(commands, &reason)
}

impl Grasp {
    /// The largest push `repo` accepts: `prs_max_push_size` for a `/prs/` repository,
    /// `max_push_size` otherwise.
    pub fn push_size_limit(&self, repo: &RepoRef) -> u64 {
        if repo.is_prs() {
            self.config().prs_max_push_size
        } else {
            self.config().max_push_size
        }
    }

    /// Decides whether `updates` may be pushed to `repo` from `client` (its address, when
    /// known), using the event store (and held events) as the view of signed state.
    pub async fn authorize_push(
        &self,
        repo: &RepoRef,
        updates: &[RefUpdate],
        client: Option<IpAddr>,
    ) -> Result<PushDecision, AuthorizationError> {
        if let Some(reason) = self.curated_push(repo).await? {
            return Ok(PushDecision::rejected(reason));
        }
        let path = self.repositories().path(repo);
        let request = PushRequest { repo, path: &path, updates, client };
        authorization::authorize_push(&request, self.event_view(), self.config().placeholder_caps()).await
    }

    /// Why a push from `client` is refused before its refs are even looked at, if it is:
    /// the push rate limits per client address, the free-disk floor and the owner's quota
    /// (a push that only deletes refs needs no space).
    async fn push_bounds(
        &self,
        repo: &RepoRef,
        updates: &[RefUpdate],
        client: Option<IpAddr>,
    ) -> Option<PushDecision> {
        if let Some(client) = client {
            if repo.is_prs() && !self.prs_push_limit().allow(client) {
                return Some(PushDecision::bounded(PushBound::PrsPushRate, PRS_RATE_LIMITED));
            }
            if !self.push_limit.allow(client) {
                return Some(PushDecision::bounded(PushBound::PushRate, PUSH_RATE_LIMITED));
            }
        }
        if updates.iter().all(|u| u.is_delete() || u.is_noop()) {
            return None;
        }
        let limits = self.config().storage_limits();
        let root = self.repositories().root().to_path_buf();
        if let Some(reason) = storage::below_floor(&limits, storage::free_bytes(&root)) {
            return Some(PushDecision::bounded(PushBound::DiskFloor, reason));
        }
        limits.quota_per_owner?;
        let owner = [root.join(repo.npub()), crate::git::prs::root(&root).join(repo.npub())];
        let used =
            tokio::task::spawn_blocking(move || owner.iter().map(|dir| storage::used_bytes(dir)).sum())
                .await
                .unwrap_or(0);
        storage::over_quota(&limits, used).map(|reason| PushDecision::bounded(PushBound::Quota, reason))
    }

    /// Decides about a push from `client` (its address, when known) before git stores
    /// anything, as every frontend must: applies the push bounds (rate per address,
    /// free disk, quota), runs [`Grasp::authorize_push`], counts and logs the decision, and,
    /// when authorized, makes sure the held events the push matched do not expire while it
    /// lands. The inline server calls it for each receive-pack request; a `pre-receive`
    /// hook reaches it through the [local API](crate::local_api).
    pub async fn admit_push(
        &self,
        repo: &RepoRef,
        updates: &[RefUpdate],
        client: Option<IpAddr>,
    ) -> Result<PushDecision, AuthorizationError> {
        let decision = match self.push_bounds(repo, updates, client).await {
            Some(refusal) => refusal,
            None => self.authorize_push(repo, updates, client).await?,
        };
        let metrics = self.metrics();
        match &decision {
            PushDecision::Rejected { reason, bound } => {
                metrics.push_authorizations.with_label_values(&["rejected"]).inc();
                if let Some(bound) = bound {
                    metrics.push_refused.with_label_values(&[bound.as_str()]).inc();
                }
                tracing::info!(repo = %repo, ?client, %reason, "push rejected");
            }
            PushDecision::Authorized { .. } => {
                metrics.push_authorizations.with_label_values(&["accepted"]).inc();
                self.hosting().extend_for_push(repo, &decision, updates).await;
            }
        }
        Ok(decision)
    }

    /// What runs after git stored an admitted push from `client` (`updates` are its ref
    /// updates): `refs/nostr/<id>` refs for unknown events become placeholders (out of the
    /// served namespace), the git-data step releases and aligns what the new data allows,
    /// and a background repack is scheduled. The inline server calls it after
    /// `git receive-pack` succeeded; a `post-receive` hook reaches it through the
    /// [local API](crate::local_api).
    pub async fn push_received(
        &self,
        repo: &RepoRef,
        updates: &[RefUpdate],
        client: Option<IpAddr>,
    ) -> ProcessReport {
        self.hosting().record_placeholders(repo, updates, client).await;
        let new_oids: Vec<String> =
            updates.iter().filter(|u| !is_zero_oid(&u.new)).map(|u| u.new.clone()).collect();
        let report = self.process_newly_available_git_data(repo, &new_oids).await;
        // Only now: a repack started earlier would compete with the step above for the CPU
        // while the client still waits for its answer. `/prs/` repositories stay small and
        // come and go; they are not repacked.
        if !repo.is_prs() {
            self.hosting().maintenance().schedule(self.repositories().path(repo));
        }
        tracing::info!(
            repo = %repo,
            refs = updates.len(),
            released = report.released.len(),
            aligned = report.aligned.len(),
            waiting = report.waiting.len(),
            "push received"
        );
        report
    }

    /// Why the operator's choices refuse any push to `repo`, whatever it carries: the
    /// curation lists, or a read-only archive (GRASP-05: the archive list names it and its
    /// owner's newest announcement does not list this server).
    async fn curated_push(&self, repo: &RepoRef) -> Result<Option<String>, AuthorizationError> {
        if let Some(reason) = crate::policy::curate::push(&self.curation().lists(), repo) {
            return Ok(Some(reason));
        }
        if repo.is_prs()
            || !crate::policy::curate::archived(self.archive(), &repo.owner, repo.identifier.as_str())
        {
            return Ok(None);
        }
        let announcements = self.event_view().announcements(repo.identifier.as_str()).await?;
        let own = announcements.iter().filter(|a| a.owner == repo.owner).max_by_key(|a| a.created_at);
        Ok(own.and_then(|ann| crate::policy::curate::read_only(ann, self.origin())))
    }

    /// Those of `updates` that are in effect in `repo` now (deleted refs are gone, the others
    /// point at their new value): what a frontend that did not run git itself passes to
    /// [`Grasp::push_received`], since git may have refused some of them.
    pub async fn updates_in_effect(&self, repo: &RepoRef, updates: &[RefUpdate]) -> Vec<RefUpdate> {
        let (path, updates) = (self.repositories().path(repo), updates.to_vec());
        let in_effect = tokio::task::spawn_blocking(move || {
            let Ok(git) = refs::open(&path) else { return Vec::new() };
            updates
                .into_iter()
                .filter(|u| {
                    let now = refs::ref_target(&git, &u.name);
                    if u.is_delete() {
                        now.is_none()
                    } else {
                        now.as_deref() == Some(u.new.as_str())
                    }
                })
                .collect()
        });
        in_effect.await.unwrap_or_default()
    }

    /// Counts one receive-pack request in the metrics: how it ended, how long it took since
    /// `started`, and the body bytes that came in and went out.
    pub fn record_push(
        &self,
        repo: &RepoRef,
        status: OperationStatus,
        started: Instant,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let metrics = self.metrics();
        metrics.count_git_bytes(repo, Direction::In, bytes_in);
        metrics.count_git_bytes(repo, Direction::Out, bytes_out);
        metrics.record_git_operation(GitOperation::Push, status, started.elapsed());
    }

    /// The step that runs whenever git data arrived in `repo` (a push, a fetch): releases
    /// held events whose data is now here, aligns every repository with the identifier to
    /// its maintainers' newest state (copying objects, refs, HEAD) and settles pull request
    /// refs. See [`crate::hosting::Hosting::process`].
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// use grasp_lib::config::Config;
    /// use grasp_lib::git::RepoRef;
    /// use grasp_lib::nip34::RepoIdentifier;
    /// use grasp_lib::store::StoreBackend;
    /// use grasp_lib::Grasp;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = Config {
    ///     domain: Some("git.example.com".into()),
    ///     database_backend: StoreBackend::Memory,
    ///     git_data_path: dir.path().to_path_buf(),
    ///     ..Config::default()
    /// };
    /// let grasp = Grasp::open(config).await.unwrap();
    /// let repo = RepoRef::new(nostr::Keys::generate().public_key(), RepoIdentifier::new("demo").unwrap());
    /// grasp.repositories().create(&repo).await.unwrap();
    ///
    /// // Git wrote objects into `repo` (say, a hook saw a push): let everything catch up.
    /// let report = grasp.process_newly_available_git_data(&repo, &[]).await;
    /// assert!(report.aligned.is_empty() && report.released.is_empty()); // no state yet
    /// assert!(report.errors.is_empty());
    /// # });
    /// ```
    pub async fn process_newly_available_git_data(
        &self,
        repo: &RepoRef,
        new_oids: &[String],
    ) -> ProcessReport {
        tracing::debug!(repo = %repo, new_oids = new_oids.len(), "new git data");
        self.hosting().process(&repo.identifier, crate::hosting::Arrival::GitData(Some(repo))).await
    }

    /// Serves `POST git-receive-pack` for an existing repository, or a `/prs/` one (created
    /// when the push is let in, removed again if it ends up without refs; `client`'s pushes
    /// there are rate-limited). Returns the response body (git's own, or our refusal in a
    /// form `git push` prints).
    pub async fn receive_pack(
        &self,
        repo: &RepoRef,
        client: IpAddr,
        git_protocol: Option<&str>,
        body: Body,
    ) -> Result<Vec<u8>, ReceivePackError> {
        let started = Instant::now();
        let guard = repo.is_prs().then(|| self.hosting().prs_push_started(repo));
        let result = self.receive_pack_unmetered(repo, client, git_protocol, body).await;
        drop(guard);
        self.hosting().collect_if_empty(repo).await;
        match &result {
            Ok(answer) => {
                let sent = answer.body.len() as u64;
                self.record_push(repo, answer.status, started, answer.request_bytes, sent);
            }
            Err(ReceivePackError::BadRequest(_)) => {
                self.record_push(repo, OperationStatus::BadRequest, started, 0, 0)
            }
            Err(ReceivePackError::Internal(_) | ReceivePackError::ClientStalled(_)) => {
                self.record_push(repo, OperationStatus::Error, started, 0, 0)
            }
        }
        result.map(|answer| answer.body)
    }

    async fn receive_pack_unmetered(
        &self,
        repo: &RepoRef,
        client: IpAddr,
        git_protocol: Option<&str>,
        body: Body,
    ) -> Result<PushAnswer, ReceivePackError> {
        let limit = self.push_size_limit(repo);
        let drain_allowance = drain_allowance(limit);
        let idle = Duration::from_secs(self.config().body_idle_timeout_secs);
        let mut body: Body = Box::pin(IdleTimeout::new(body, idle));
        let (commands, leftover) = match read_push_commands(&mut body).await {
            Err(ReceivePackError::ClientStalled(reason)) => {
                self.metrics().timeouts.with_label_values(&["body_idle"]).inc();
                return Err(ReceivePackError::ClientStalled(reason));
            }
            read => read?,
        };
        let command_bytes = (commands.raw.len() + leftover.len()) as u64;
        let decision = self.admit_push(repo, &commands.updates, Some(client)).await?;
        if let PushDecision::Rejected { reason, .. } = &decision {
            drain(&mut body, drain_allowance).await;
            let body = rejection(&commands, reason);
            return Ok(PushAnswer { body, status: OperationStatus::Rejected, request_bytes: command_bytes });
        }
        if repo.is_prs() {
            self.repositories()
                .create(repo)
                .await
                .map_err(|e| ReceivePackError::Internal(format!("cannot create {repo}: {e}")))?;
        }

        let path = self.repositories().path(repo);
        let mut child = smart_http::command(Service::ReceivePack, &path, git_protocol, false)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ReceivePackError::Internal(format!("cannot start git receive-pack: {e}")))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        // Read git's (small) answer while the pack streams in, so neither side blocks.
        let output = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            (out, err)
        });
        let mut prefix = commands.raw.clone();
        prefix.extend_from_slice(&leftover);
        let stdin = child.stdin.take().expect("stdin is piped");
        let piped = smart_http::pipe_body(stdin, &prefix, &mut body, limit).await;
        if matches!(piped, Ok(Piped::TooLarge)) {
            let _ = child.kill().await;
            drain(&mut body, drain_allowance).await;
            tracing::info!(repo = %repo, limit, "push refused: too large");
            let body = too_large(&commands, repo, limit);
            return Ok(PushAnswer { body, status: OperationStatus::Rejected, request_bytes: limit });
        }
        if matches!(piped, Ok(Piped::Complete(_))) {
            crate::crash::point("push-while-receiving");
        }
        let mut stalled = None;
        match &piped {
            Err(e) if is_idle_timeout(e) => {
                // The client stopped sending mid-pack: end git, whose half-received objects
                // are quarantined and go with it.
                tracing::info!(repo = %repo, error = %e, "push aborted: the client stalled");
                self.metrics().timeouts.with_label_values(&["body_idle"]).inc();
                smart_http::terminate(&mut child).await;
                stalled = Some(e.to_string());
            }
            Err(e) => {
                // git stopped reading (it failed); let the client finish so it sees git's answer.
                tracing::debug!(repo = %repo, error = %e, "writing the pack to git failed");
                drain(&mut body, drain_allowance).await;
            }
            Ok(_) => {}
        }
        let status = child.wait().await.map_err(|e| ReceivePackError::Internal(e.to_string()))?;
        if let Some(reason) = stalled.filter(|_| !status.success()) {
            // (Had git already received the whole pack and updated the refs, the push is
            // processed below like any other.)
            return Err(ReceivePackError::ClientStalled(reason));
        }
        let (out, err) = output.await.map_err(|e| ReceivePackError::Internal(e.to_string()))?;
        let request_bytes = match piped {
            Ok(Piped::Complete(bytes)) => bytes,
            _ => command_bytes,
        };
        if !status.success() {
            let stderr = String::from_utf8_lossy(&err).trim().to_owned();
            tracing::warn!(repo = %repo, %stderr, "git receive-pack failed");
            if out.is_empty() {
                return Err(ReceivePackError::Internal(format!("git receive-pack failed: {stderr}")));
            }
            return Ok(PushAnswer { body: out, status: OperationStatus::Error, request_bytes });
        }
        crate::crash::point("push-after-receive-pack");
        self.push_received(repo, &commands.updates, Some(client)).await;
        Ok(PushAnswer { body: out, status: OperationStatus::Success, request_bytes })
    }
}

/// A receive-pack answer and what the metrics need to know about it.
struct PushAnswer {
    body: Vec<u8>,
    status: OperationStatus,
    request_bytes: u64,
}
