//! Deciding about a push and processing it once it landed: the two calls every frontend
//! makes around git (the inline server itself, grasp-proxy around its upstream, a hook
//! through the local API).

use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use crate::authorization::{self, AuthorizationError, PushBound, PushDecision, PushRequest};
use crate::git::observe::GitOperation;
use crate::git::pktline::RefUpdate;
use crate::git::{is_zero_oid, refs, RepoRef};
use crate::git::{Direction, OperationStatus};
use crate::hosting::ProcessReport;
use crate::limits::storage;
use crate::Grasp;

/// The refusal of a push to `/prs/` over `prs_pushes_per_minute`.
const PRS_RATE_LIMITED: &str =
    "rate-limited: too many pushes to /prs/ from your address; try again in a minute (prs_pushes_per_minute)";

/// The refusal of a push over `pushes_per_minute`.
const PUSH_RATE_LIMITED: &str =
    "rate-limited: too many pushes from your address; try again in a minute (pushes_per_minute)";

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
        let announced = RepoRef::new(repo.owner, repo.identifier.clone());
        let prs = RepoRef::prs(repo.owner, repo.identifier.clone());
        // The owner's directories in both namespaces.
        let owner = [announced, prs]
            .map(|r| self.repositories().path(&r).parent().map(Path::to_path_buf).unwrap_or_default());
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
        // On a cluster, held events other nodes took count too.
        self.hosting().catch_up().await;
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
}
