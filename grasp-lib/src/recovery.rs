//! Startup recovery: finishing what a crash interrupted.
//!
//! A crash (an OOM kill, `SIGKILL`, power loss) can stop the server between steps that
//! belong together. Each step is durable on its own (git's ref updates, the event store's
//! transactions, the purgatory journal), so what is left is work not yet done:
//!
//! - git updated a push's refs, but the git-data step did not run: held events whose data
//!   is here stay held, other repositories with the identifier are not aligned;
//! - an alignment moved refs but did not record the state it applied;
//! - a release stored an event but purgatory still holds it;
//! - a `refs/nostr/<id>` push for an unknown event landed before its placeholder was
//!   recorded and its ref moved out of the served namespace (the ref would be served, and
//!   never expire); older versions also left every waiting ref there;
//! - an interrupted push left half-received objects in a quarantine directory.
//!
//! [`recover`] runs the git-data step once per identifier on disk, records and parks the
//! missing placeholders and removes stale quarantines, for announced and `/prs/`
//! repositories alike. It is idempotent: on an undamaged server it changes nothing. It
//! runs in the background at start ([`crate::Grasp::open`]); pushes that arrive meanwhile
//! are serialised with it per identifier.

use std::collections::BTreeMap;

use crate::git::pktline::RefUpdate;
use crate::git::{refs, Namespace, RepoRef, ZERO_OID};
use crate::hosting::{Arrival, Hosting};
use crate::nip34::RepoIdentifier;

/// What [`recover`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Repositories on disk.
    pub repositories: usize,
    /// Held events released because their data was already here.
    pub released: usize,
    /// Repositories whose refs were brought to their state.
    pub aligned: usize,
    /// `refs/nostr` refs that got the placeholder a crash had kept them from.
    pub placeholders: usize,
    /// Quarantine directories of interrupted pushes removed.
    pub quarantines_removed: usize,
    /// Problems that did not stop the rest.
    pub errors: Vec<String>,
}

/// Finishes interrupted work on every repository; see the module documentation.
pub async fn recover(hosting: &Hosting) -> RecoveryReport {
    let mut repos = hosting.repos().all();
    repos.extend(hosting.repos().all_in(Namespace::Prs));
    let mut report = RecoveryReport { repositories: repos.len(), ..RecoveryReport::default() };
    let mut by_identifier: BTreeMap<RepoIdentifier, Vec<RepoRef>> = BTreeMap::new();
    for repo in repos {
        by_identifier.entry(repo.identifier.clone()).or_default().push(repo);
    }
    for (identifier, repos) in &by_identifier {
        for repo in repos {
            report.quarantines_removed += remove_quarantines(hosting, repo).await;
            report.placeholders += record_missing_placeholders(hosting, repo).await;
        }
        // An announced repository stands for all of them (the step looks at every repository
        // of the identifier); each `/prs/` one is a source of pull request refs of its own.
        let announced = repos.iter().find(|r| !r.is_prs());
        let sources: Vec<Option<&RepoRef>> =
            announced.into_iter().chain(repos.iter().filter(|r| r.is_prs())).map(Some).collect();
        for source in sources {
            let processed = hosting.process(identifier, Arrival::GitData(source)).await;
            report.released += processed.released.len();
            report.aligned += processed.aligned.len();
            report.errors.extend(processed.errors);
        }
    }
    report
}

/// `objects/incoming-*`: where git receive-pack keeps a push's objects until it accepts
/// them. At start no push is running, so any left are from a push that was cut off.
async fn remove_quarantines(hosting: &Hosting, repo: &RepoRef) -> usize {
    let objects = hosting.repos().path(repo).join("objects");
    let Ok(mut entries) = tokio::fs::read_dir(&objects).await else { return 0 };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        if entry.file_name().to_string_lossy().starts_with("incoming-")
            && tokio::fs::remove_dir_all(entry.path()).await.is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// `refs/nostr/<id>` refs whose event is neither stored nor held become placeholders and
/// leave the served namespace (the crash came between the push and its bookkeeping, or an
/// older version left them there), and waiting refs whose placeholder was lost get one
/// again, so they expire; returns how many changed.
async fn record_missing_placeholders(hosting: &Hosting, repo: &RepoRef) -> usize {
    let path = hosting.repos().path(repo);
    let listed = tokio::task::spawn_blocking(move || {
        let git = refs::open(&path)?;
        Ok::<_, crate::git::GitError>((
            refs::event_refs(&git, "refs/nostr/")?,
            refs::event_refs(&git, refs::WAITING_PREFIX)?,
        ))
    })
    .await
    .map_err(crate::git::GitError::from)
    .and_then(|r| r);
    let Ok((served, waiting)) = listed else { return 0 };
    let updates: Vec<RefUpdate> = served
        .into_iter()
        .map(|(id, new)| RefUpdate { old: ZERO_OID.to_owned(), new, name: refs::nostr_ref(&id) })
        .collect();
    let parked = hosting.record_placeholders(repo, &updates, None).await;
    let unrecorded: Vec<(nostr::EventId, String)> =
        waiting.into_iter().filter(|(id, _)| hosting.purgatory().placeholder(id).is_none()).collect();
    parked + hosting.adopt_waiting_refs(repo, unrecorded).await
}
