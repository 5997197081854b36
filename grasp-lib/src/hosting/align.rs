//! Building blocks of the one step that runs whenever git data becomes available
//! ([`super::Hosting::process`]): which state a repository follows, and how one repository
//! is brought to it.
//!
//! For every repository on this server with the identifier, take the newest non-empty state
//! authored by a member of that owner's confirmed maintainer set; if the repository does not
//! follow it yet, copy the missing objects from another repository on this server with the
//! same identifier, align branches and tags, point HEAD at the state's branch and remember
//! the state (so an older one can never roll the repository back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nostr::EventId;

use crate::alignment::AlignmentPlan;
use crate::git::refs::{self, AppliedChanges};
use crate::git::{GitError, RepoRef, Repositories};
use crate::maintainers::MaintainerSet;
use crate::nip34::{RepoIdentifier, RepoState};
use crate::purgatory::HeldKind;

/// What one run of the git-data step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessReport {
    /// Held events released from purgatory (stored and delivered live).
    pub released: Vec<(EventId, HeldKind)>,
    /// Held events whose data arrived but which the store refused as superseded (a newer
    /// version is stored); they left purgatory without being served.
    pub superseded: Vec<EventId>,
    /// `refs/nostr` refs deleted because they did not hold their event's commit.
    pub deleted_refs: Vec<(RepoRef, String)>,
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
/// align the same refs at the same time. An identifier's entry lives only while someone
/// holds or waits for its lock, so the map does not grow with every identifier ever seen.
#[derive(Debug, Clone, Default)]
pub struct IdentifierLocks {
    locks: Arc<Mutex<HashMap<RepoIdentifier, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Exclusive processing rights on one identifier, until dropped.
#[derive(Debug)]
pub struct IdentifierGuard {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    lock: Arc<tokio::sync::Mutex<()>>,
    identifier: RepoIdentifier,
    locks: IdentifierLocks,
}

impl Drop for IdentifierGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Nobody else holds or waits for it (the map and this guard are the only owners,
        // and no new owner can appear while the map is locked): forget it.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.identifier);
        }
    }
}

impl IdentifierLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<RepoIdentifier, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().expect("lock map poisoned")
    }

    /// Waits for exclusive processing rights on `identifier`.
    pub async fn lock(&self, identifier: &RepoIdentifier) -> IdentifierGuard {
        let lock = self.map().entry(identifier.clone()).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        IdentifierGuard { guard: Some(guard), lock, identifier: identifier.clone(), locks: self.clone() }
    }

    /// Identifiers with an entry now (someone holds or waits for their lock).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// True when no identifier is locked or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The newest state that can drive refs ([`RepoState::can_drive_refs`]) authored by a
/// member of `set` (ties: lowest id).
pub fn authoritative_state<'a>(set: &MaintainerSet, states: &'a [RepoState]) -> Option<&'a RepoState> {
    states
        .iter()
        .filter(|s| s.can_drive_refs() && set.contains(&s.author))
        .max_by(|a, b| a.created_at.cmp(&b.created_at).then(b.id.cmp(&a.id)))
}

/// What [`align_one`] did to one repository.
pub(crate) enum Outcome {
    Unchanged,
    Aligned(EventId, AppliedChanges, bool),
    Waiting(usize, bool),
}

/// Aligns one repository to `state`, copying objects from `sources` when needed.
pub(crate) async fn align_one(
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
        crate::crash::point("align-before-record");
        refs::record_applied_state(&git, &state.id, state.created_at)?;
        if changes == AppliedChanges::default() {
            Ok(Outcome::Unchanged)
        } else {
            Ok(Outcome::Aligned(state.id, changes, copied))
        }
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_identifier_lock_is_forgotten_once_nobody_holds_or_waits_for_it() {
        let locks = IdentifierLocks::default();
        let (a, b) = (RepoIdentifier::new("a").unwrap(), RepoIdentifier::new("b").unwrap());
        let first = locks.lock(&a).await;
        let other = locks.lock(&b).await;
        assert_eq!(locks.len(), 2);
        let waiting = {
            let locks = locks.clone();
            let a = a.clone();
            tokio::spawn(async move {
                let _second = locks.lock(&a).await;
            })
        };
        // The waiter holds the entry while it waits.
        tokio::task::yield_now().await;
        drop(first);
        waiting.await.unwrap();
        drop(other);
        assert!(locks.is_empty(), "{} entries left", locks.len());
        for i in 0..1000 {
            let _guard = locks.lock(&RepoIdentifier::new(&format!("r{i}")).unwrap()).await;
        }
        assert!(locks.is_empty());
    }
}
