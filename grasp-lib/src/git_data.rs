//! The one step that runs whenever git data becomes available: after a push, when a state
//! event arrives whose objects are already here, when a repository is created (and later
//! after hunting and relay sync).
//!
//! For every repository on this server with the identifier, take the newest non-empty state
//! authored by a member of that owner's recursive maintainer set; if the repository does not
//! follow it yet, copy the missing objects from another repository on this server with the
//! same identifier, align branches and tags, point HEAD at the state's branch and remember
//! the state (so an older one can never roll the repository back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nostr::EventId;

use crate::alignment::AlignmentPlan;
use crate::authorization::EventView;
use crate::git::refs::{self, AppliedChanges};
use crate::git::{GitError, RepoRef, Repositories};
use crate::maintainers::MaintainerSet;
use crate::nip34::{RepoIdentifier, RepoState};

/// What one run of [`process_newly_available_git_data`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessReport {
    /// Repositories whose refs or HEAD changed, with what changed and the state applied.
    pub aligned: Vec<(RepoRef, EventId, AppliedChanges)>,
    /// Repositories that received objects copied from another repository here.
    pub copied_into: Vec<RepoRef>,
    /// Repositories whose authoritative state still lacks objects: (repo, missing count).
    pub waiting: Vec<(RepoRef, usize)>,
    /// Failures that did not stop the other repositories from being processed.
    pub errors: Vec<String>,
}

/// Serialises processing per identifier, so two pushes to co-maintainer repositories never
/// align the same refs at the same time.
#[derive(Debug, Clone, Default)]
pub struct IdentifierLocks {
    locks: Arc<Mutex<HashMap<RepoIdentifier, Arc<tokio::sync::Mutex<()>>>>>,
}

impl IdentifierLocks {
    /// Waits for exclusive processing rights on `identifier`.
    pub async fn lock(&self, identifier: &RepoIdentifier) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().expect("lock map poisoned");
            map.entry(identifier.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// The newest non-empty state authored by a member of `set` (ties: lowest id).
pub fn authoritative_state<'a>(set: &MaintainerSet, states: &'a [RepoState]) -> Option<&'a RepoState> {
    states
        .iter()
        .filter(|s| !s.refs.is_empty() && set.contains(&s.author))
        .max_by(|a, b| a.created_at.cmp(&b.created_at).then(b.id.cmp(&a.id)))
}

enum Outcome {
    Unchanged,
    Aligned(EventId, AppliedChanges, bool),
    Waiting(usize, bool),
}

/// Aligns one repository to `state`, copying objects from `sources` when needed.
async fn align_one(
    repos: &Repositories,
    target: &RepoRef,
    state: &RepoState,
    sources: &[RepoRef],
) -> Result<Outcome, GitError> {
    let path = repos.path(target);
    let wanted: Vec<String> = state.refs.values().cloned().collect();
    let (check_path, state_refs, state_id, state_at) =
        (path.clone(), state.refs.clone(), state.id, state.created_at);
    let missing = tokio::task::spawn_blocking(move || -> Result<Option<Vec<String>>, GitError> {
        let git = refs::open(&check_path)?;
        match refs::applied_state(&git) {
            // Never roll back to an older state.
            Some((_, at)) if at > state_at => return Ok(None),
            // Already follows this very state.
            Some(applied)
                if applied == (state_id, state_at) && refs::branches_and_tags(&git)? == state_refs =>
            {
                return Ok(None)
            }
            _ => {}
        }
        Ok(Some(refs::missing_objects(&git, &wanted)?))
    })
    .await??;
    let Some(missing) = missing else { return Ok(Outcome::Unchanged) };
    let mut copied = false;
    let mut missing = missing;
    for source in sources.iter().filter(|s| *s != target) {
        if missing.is_empty() {
            break;
        }
        let source_path = repos.path(source);
        let probe = source_path.clone();
        let wanted_here = missing.clone();
        let source_missing =
            tokio::task::spawn_blocking(move || refs::missing_objects(&refs::open(&probe)?, &wanted_here))
                .await??;
        let available: Vec<String> =
            missing.iter().filter(|o| !source_missing.contains(o)).cloned().collect();
        if available.is_empty() {
            continue;
        }
        refs::copy_objects(&source_path, &path, &available).await?;
        copied = true;
        missing.retain(|o| !available.contains(o));
    }
    if !missing.is_empty() {
        return Ok(Outcome::Waiting(missing.len(), copied));
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || -> Result<Outcome, GitError> {
        let git = refs::open(&path)?;
        if refs::applied_state(&git).is_some_and(|(_, at)| at > state.created_at) {
            return Ok(Outcome::Unchanged);
        }
        let plan = AlignmentPlan::new(&refs::branches_and_tags(&git)?, &state);
        let changes = refs::apply(&git, &plan)?;
        refs::record_applied_state(&git, &state.id, state.created_at)?;
        if changes == AppliedChanges::default() {
            Ok(Outcome::Unchanged)
        } else {
            Ok(Outcome::Aligned(state.id, changes, copied))
        }
    })
    .await?
}

/// Processes newly available git data for every repository with `identifier`.
///
/// `source` is where the data landed (tried first when copying objects); `new_oids` are
/// the objects that arrived. Safe to call at any time: repositories that already follow
/// their authoritative state are left alone.
///
/// ```
/// # tokio_test::block_on(async {
/// use grasp_lib::git::{RepoRef, Repositories};
/// use grasp_lib::git_data::{process_newly_available_git_data, IdentifierLocks};
/// use grasp_lib::nip34::RepoIdentifier;
/// use grasp_lib::store::EventStore;
///
/// let dir = tempfile::tempdir().unwrap();
/// let repos = Repositories::new(dir.path());
/// let repo = RepoRef::new(nostr::Keys::generate().public_key(), RepoIdentifier::new("demo").unwrap());
/// repos.create(&repo).await.unwrap();
///
/// // After git wrote new objects into `repo` (a push, a fetch), let every repository with
/// // this identifier catch up with its maintainers' latest state.
/// let store = EventStore::memory();
/// let report = process_newly_available_git_data(
///     &repos, &IdentifierLocks::default(), &store, &repo.identifier, Some(&repo), &[],
/// ).await;
/// assert!(report.aligned.is_empty()); // no state event yet: nothing to align
/// assert!(report.errors.is_empty());
/// # });
/// ```
pub async fn process_newly_available_git_data(
    repos: &Repositories,
    locks: &IdentifierLocks,
    view: &dyn EventView,
    identifier: &RepoIdentifier,
    source: Option<&RepoRef>,
    new_oids: &[String],
) -> ProcessReport {
    let _guard = locks.lock(identifier).await;
    let mut report = ProcessReport::default();
    let (announcements, states) =
        match (view.announcements(identifier.as_str()).await, view.states(identifier.as_str()).await) {
            (Ok(a), Ok(s)) => (a, s),
            (Err(e), _) | (_, Err(e)) => {
                report.errors.push(e.to_string());
                return report;
            }
        };
    let mut hosted = repos.with_identifier(announcements.iter().map(|a| a.owner), identifier);
    if let Some(source) = source {
        if !hosted.contains(source) && repos.exists(source) {
            hosted.push(source.clone());
        }
        // The repository the data landed in is the first place to copy from.
        hosted.sort_by_key(|r| r != source);
    }
    tracing::debug!(%identifier, repos = hosted.len(), new_oids = new_oids.len(), "processing new git data");
    for target in &hosted {
        let set = MaintainerSet::from_announcements(target.owner, &announcements);
        let Some(state) = authoritative_state(&set, &states) else { continue };
        match align_one(repos, target, state, &hosted).await {
            Ok(Outcome::Unchanged) => {}
            Ok(Outcome::Aligned(id, changes, copied)) => {
                tracing::info!(repo = %target, state = %id, ?changes, "repository aligned to state");
                if copied {
                    report.copied_into.push(target.clone());
                }
                report.aligned.push((target.clone(), id, changes));
            }
            Ok(Outcome::Waiting(missing, copied)) => {
                tracing::debug!(repo = %target, missing, "state waits for git data");
                if copied {
                    report.copied_into.push(target.clone());
                }
                report.waiting.push((target.clone(), missing));
            }
            Err(e) => {
                tracing::warn!(repo = %target, error = %e, "aligning repository failed");
                report.errors.push(format!("{target}: {e}"));
            }
        }
    }
    report
}
