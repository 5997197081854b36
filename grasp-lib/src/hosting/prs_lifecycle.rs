//! GRASP-06 `/prs/` repositories come and go: created by a push, removed once they have no
//! ref left, never under a push that is landing.

use super::hub::Hosting;
use crate::git::{prs, RepoRef};

impl Hosting {
    /// Marks `repo` as being pushed to until the guard is dropped, so an empty `/prs/`
    /// repository is not removed under a push that is landing in it.
    pub fn prs_push_started(&self, repo: &RepoRef) -> prs::PushGuard {
        self.prs_collector.push_started(&self.repos.path(repo))
    }

    /// Removes a `/prs/` repository that has no refs left (see [`prs::Collector`]).
    /// Announced repositories are never touched.
    pub async fn collect_if_empty(&self, repo: &RepoRef) {
        if !repo.is_prs() {
            return;
        }
        let (collector, path) = (self.prs_collector.clone(), self.repos.path(repo));
        match self.blocking(move || collector.remove_if_empty(&path)).await {
            Ok(true) => tracing::info!(repo = %repo, "removed empty /prs/ repository"),
            Ok(false) => {
                tracing::debug!(repo = %repo, "/prs/ repository kept: it has refs or a push is landing")
            }
            Err(e) => tracing::warn!(repo = %repo, error = %e, "removing empty /prs/ repository failed"),
        }
    }
}
