//! What a person opening a repository URL in a browser should see.

use std::collections::BTreeMap;

use crate::git::{refs, GitError, RepoRef};
use crate::git_data::authoritative_state;
use crate::maintainers::MaintainerSet;
use crate::nip34::{RepoAnnouncement, RepoState};
use crate::store::StoreError;
use crate::Grasp;

/// A hosted repository at a glance.
#[derive(Debug, Clone)]
pub struct RepoSummary {
    /// The owner's announcement, if it is stored.
    pub announcement: Option<RepoAnnouncement>,
    /// The newest state by a maintainer (what the repository follows).
    pub state: Option<RepoState>,
    /// Branches and tags on disk now.
    pub refs: BTreeMap<String, String>,
    /// The branch HEAD points at.
    pub head: Option<String>,
}

/// Why a summary could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// Reading events failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the repository failed.
    #[error(transparent)]
    Git(#[from] GitError),
}

impl Grasp {
    /// Summarises a hosted repository; `None` when it does not exist here.
    pub async fn repository_summary(&self, repo: &RepoRef) -> Result<Option<RepoSummary>, SummaryError> {
        if !self.repositories().exists(repo) {
            return Ok(None);
        }
        let d = repo.identifier.as_str();
        // What the repository follows is decided by stored (released) events only.
        let store = self.hosting().store();
        let mut announcements = store.announcements(d).await?;
        announcements.extend(self.hosting().held_announcements(d).into_iter().map(|(_, a)| a));
        let states = crate::authorization::EventView::states(store, d).await?;
        let set = MaintainerSet::from_announcements(repo.owner, &announcements);
        let state = authoritative_state(&set, &states).cloned();
        let announcement = announcements.into_iter().find(|a| a.owner == repo.owner);
        let path = self.repositories().path(repo);
        let (refs, head) = tokio::task::spawn_blocking(move || -> Result<_, GitError> {
            let git = refs::open(&path)?;
            let head = git
                .find_reference("HEAD")
                .ok()
                .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_owned));
            Ok((refs::branches_and_tags(&git)?, head))
        })
        .await
        .map_err(GitError::from)??;
        Ok(Some(RepoSummary { announcement, state, refs, head }))
    }
}
