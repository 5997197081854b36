//! The git-data step ([`Hosting::process`]): what runs whenever git data may have become
//! available.

use std::collections::HashSet;

use nostr::EventId;

use super::align::{align_one, authoritative_state, Outcome, ProcessReport};
use super::decide::{self, FoundRef};
use super::hub::{Arrival, Hosting};
use crate::authorization::EventView;
use crate::git::refs;
use crate::git::RepoRef;
use crate::nip34::{RepoAnnouncement, RepoIdentifier, RepoState};
use crate::purgatory::{HeldEvent, HeldKind};

impl Hosting {
    /// The git-data step for every repository with `identifier`; see the module
    /// documentation. `arrival` says what happened, so only what it can affect is checked:
    /// a held event that just arrived is the only candidate for release, while new git data
    /// re-checks every held state and the pull request refs of the repositories.
    ///
    /// Every frontend calls it through [`crate::push`] after a push; hunting calls it after a
    /// fetch, ingest when a held event arrives ([`Arrival::Held`]) and when announcements
    /// change maintainer sets ([`Arrival::Announcements`]).
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// use grasp_lib::hosting::Arrival;
    /// use grasp_lib::nip34::RepoIdentifier;
    /// use grasp_lib::{config::Config, store::StoreBackend, Grasp};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = Config {
    ///     domain: Some("git.example.com".into()),
    ///     database_backend: StoreBackend::Memory,
    ///     git_data_path: dir.path().join("git"),
    ///     relay_data_path: dir.path().join("relay"),
    ///     ..Config::default()
    /// };
    /// let grasp = Grasp::open(config).await.unwrap();
    /// // Git data landed in some repository of `repo` (a push a forge took itself, say):
    /// // release what it satisfies and make every repository follow its maintainers' state.
    /// let repo = RepoIdentifier::new("repo").unwrap();
    /// let report = grasp.hosting().process(&repo, Arrival::GitData(None)).await;
    /// assert!(report.released.is_empty() && report.errors.is_empty());
    /// # });
    /// ```
    pub async fn process(&self, identifier: &RepoIdentifier, arrival: Arrival<'_>) -> ProcessReport {
        let _guard = self.locks.lock(identifier).await;
        let _cluster = self.cluster_lock(&format!("git-data:{identifier}")).await;
        self.catch_up().await;
        let d = identifier.as_str();
        let mut report = ProcessReport::default();
        let arrived = match arrival {
            Arrival::Held(id) => match self.purgatory.get(&id) {
                // A dependent waits for its parent, which is held: nothing can change.
                Some(entry) if entry.kind == HeldKind::Dependent => return report,
                Some(entry) => Some(entry),
                None => return report,
            },
            _ => None,
        };
        let all_anns = match self.maintainer_announcements(d).await {
            Ok(all) => all,
            Err(e) => {
                report.errors.push(e.to_string());
                return report;
            }
        };
        let mut owners: Vec<_> = all_anns.iter().map(|a| a.owner).collect();
        owners.sort();
        owners.dedup();
        let mut hosted = self.repos.with_identifier(owners, identifier);
        // `/prs/` repositories only ever carry pull request refs: searched for those, never
        // aligned to a state or used as a source of branch data.
        let mut prs_sources = Vec::new();
        if let Arrival::GitData(Some(source)) = arrival {
            if source.is_prs() {
                prs_sources.push(source.clone());
            } else {
                if !hosted.contains(source) && self.repos.exists(source) {
                    hosted.push(source.clone());
                }
                hosted.sort_by_key(|r| r != source);
            }
        }
        tracing::debug!(%identifier, repos = hosted.len(), ?arrival, "processing git data");
        let only = |kind: HeldKind| -> Option<Vec<HeldEvent>> {
            match &arrived {
                Some(entry) if entry.kind == kind => Some(vec![entry.clone()]),
                Some(_) => None,
                None => Some(self.purgatory.held_for(d, kind)),
            }
        };

        // 1. Held states whose objects are here.
        if let Some(entries) = only(HeldKind::State) {
            let authorized =
                decide::authorized_held_states(self.maintainer_model, entries, &hosted, &all_anns);
            let (entries, states): (Vec<HeldEvent>, Vec<RepoState>) = authorized.into_iter().unzip();
            let checked = self.satisfiable(&hosted, states).await;
            let mut promoted = Vec::new();
            for (entry, (state, here)) in entries.into_iter().zip(checked) {
                if here {
                    self.release(entry, &mut report).await;
                    if report.released.iter().any(|(id, _)| *id == state.id) {
                        promoted.push(state);
                    }
                }
            }
            if !promoted.is_empty() {
                self.drop_superseded_held_states(d, &hosted, &promoted, &mut report).await;
            }
        }

        // 2. Every repository follows the newest stored state of its maintainers.
        let pr_only =
            arrived.as_ref().is_some_and(|e| e.kind == HeldKind::PullRequest) || !prs_sources.is_empty();
        if !pr_only {
            self.align_all(d, &hosted, &all_anns, &mut report).await;
        }

        // 3. A held announcement is released once its repository follows a state.
        if let Some(entries) = only(HeldKind::Announcement) {
            for entry in entries {
                let Ok(ann) = RepoAnnouncement::parse(&entry.event) else { continue };
                let repo = RepoRef::new(ann.owner, identifier.clone());
                if self.repos.exists(&repo) && self.follows_a_state(&repo).await {
                    self.release(entry, &mut report).await;
                    self.offer_earlier_prs(&repo, &all_anns, identifier, &mut report).await;
                }
            }
        }

        // 4. Pull requests: released when refs/nostr/<id> holds their commit here.
        match (&arrival, &arrived) {
            (Arrival::Held(_), Some(entry)) if entry.kind == HeldKind::PullRequest => {
                let id = entry.event.id;
                let mut found = Vec::new();
                for repo in self.pull_request_repos(&entry.event, &hosted) {
                    for name in [refs::nostr_ref(&id), refs::waiting_ref(&id)] {
                        if let Some(target) = self.ref_target(&repo, &name).await {
                            found.push(FoundRef { repo: repo.clone(), name, target });
                        }
                    }
                }
                self.settle_pull_request(entry.clone(), found, &hosted, &all_anns, identifier, &mut report)
                    .await;
            }
            (Arrival::GitData(_), _) => {
                let mut refs_by_repo = Vec::new();
                for repo in hosted.iter().chain(&prs_sources) {
                    refs_by_repo.push((repo.clone(), self.nostr_refs(repo).await));
                }
                let ids: HashSet<EventId> =
                    refs_by_repo.iter().flat_map(|(_, m)| m.keys().copied()).collect();
                for id in ids {
                    let Some(entry) = self.purgatory.get(&id).filter(|e| e.kind == HeldKind::PullRequest)
                    else {
                        continue;
                    };
                    let found = refs_by_repo
                        .iter()
                        .filter_map(|(r, m)| {
                            let target = m.get(&id)?.clone();
                            Some(FoundRef { repo: r.clone(), name: refs::nostr_ref(&id), target })
                        })
                        .collect();
                    self.settle_pull_request(entry, found, &hosted, &all_anns, identifier, &mut report).await;
                }
            }
            _ => {}
        }
        self.update_gauges();
        report
    }

    /// After `promoted` were released: the same authors' older held states whose data is not
    /// here can never be served, so they leave purgatory now instead of at expiry (and stop
    /// costing hunting fetches). Other maintainers' states are kept.
    async fn drop_superseded_held_states(
        &self,
        d: &str,
        hosted: &[RepoRef],
        promoted: &[RepoState],
        report: &mut ProcessReport,
    ) {
        let held: Vec<(HeldEvent, RepoState)> = self
            .purgatory
            .held_for(d, HeldKind::State)
            .into_iter()
            .filter_map(|e| RepoState::parse(&e.event).ok().map(|s| (e, s)))
            .collect();
        let (entries, states): (Vec<HeldEvent>, Vec<RepoState>) =
            decide::superseded_held_states(promoted, held).into_iter().unzip();
        if entries.is_empty() {
            return;
        }
        let checked = self.satisfiable(hosted, states).await;
        let stale: Vec<EventId> =
            entries.iter().zip(checked).filter(|(_, (_, here))| !here).map(|(e, _)| e.event.id).collect();
        if stale.is_empty() {
            return;
        }
        match self.purgatory.remove(&stale).await {
            Ok(removed) => {
                for entry in &removed {
                    tracing::info!(event_id = %entry.event.id, identifier = d, "superseded held state dropped");
                }
                report.superseded.extend(removed.iter().map(|e| e.event.id));
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }

    pub(super) async fn align_all(
        &self,
        d: &str,
        hosted: &[RepoRef],
        all_anns: &[RepoAnnouncement],
        report: &mut ProcessReport,
    ) {
        let states = match EventView::states(&self.store, d).await {
            Ok(states) => states,
            Err(e) => {
                report.errors.push(e.to_string());
                return;
            }
        };
        for target in hosted {
            let set = self.maintainer_set(target.owner, all_anns);
            let Some(state) = authoritative_state(&set, &states) else { continue };
            match align_one(&self.repos, target, state, hosted).await {
                Ok(Outcome::Unchanged) => {}
                Ok(Outcome::Aligned(id, changes, copied)) => {
                    tracing::info!(repo = %target, state = %id, ?changes, "repository aligned to state");
                    if copied {
                        self.maintenance.schedule(self.repos.path(target));
                        report.copied_into.push(target.clone());
                    }
                    self.metrics.repos_aligned.inc();
                    report.aligned.push((target.clone(), id, changes));
                }
                Ok(Outcome::Waiting(missing, copied)) => {
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
    }
}
