//! Hosting: the repositories on this server, the events that drive them, and purgatory.
//!
//! This is where git data and events meet. [`Hosting::process`] is the one step that runs
//! whenever git data may have become available (after a push, when a held event arrives,
//! when a repository is created): it releases held events whose data is here, aligns every
//! repository with the identifier to its maintainers' newest state, and moves pull request
//! refs. [`Hosting::sweep`] drops what waited too long.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use nostr::{Event, EventId};
use nostr_database::DatabaseEventStatus;

use crate::authorization::{nostr_ref_id, EventView, Named, PlaceholderRoom, PushDecision};
use crate::git::maintenance::Maintenance;
use crate::git::pktline::RefUpdate;
use crate::git::refs;
use crate::git::{is_zero_oid, prs, GitError, RepoRef, Repositories};
use crate::git_data::{align_one, authoritative_state, IdentifierLocks, Outcome, ProcessReport};
use crate::maintainers::MaintainerSet;
use crate::metrics::Metrics;
use crate::nip34::{commit_tag, kinds, RepoAnnouncement, RepoCoordinate, RepoIdentifier, RepoState};
use crate::origin::ServiceOrigin;
use crate::purgatory::{now_ms, HeldEvent, HeldKind, HoldOutcome, Placeholder, Purgatory, PurgatoryError};
use crate::relay::Publisher;
use crate::store::{EventStore, StoreError};
use std::net::IpAddr;

/// What made git data (possibly) available, so the git-data step checks only what it
/// can affect.
#[derive(Debug, Clone, Copy)]
pub enum Arrival<'a> {
    /// A held event just arrived (its data may already be here).
    Held(EventId),
    /// Git data landed, in this repository when known (a push, a fetch).
    GitData(Option<&'a RepoRef>),
    /// Stored announcements changed, so maintainer sets may have.
    Announcements,
}

/// An event that left purgatory because its git data arrived: it is stored and served
/// from now on. See [`Hosting::subscribe_released`].
#[derive(Debug, Clone)]
pub struct ReleasedEvent {
    /// The event, exactly as received.
    pub event: Event,
    /// Why it was held.
    pub kind: HeldKind,
    /// The repository identifier it belongs to.
    pub identifier: String,
}

/// Where a pull request's ref was found: the repository, the ref (served or waiting) and
/// the commit it holds.
#[derive(Debug, Clone)]
struct FoundRef {
    repo: RepoRef,
    name: String,
    target: String,
}

/// Released events buffered for a subscriber that reads slowly; beyond this it is told how
/// many it missed (`RecvError::Lagged`).
const RELEASED_BUFFER: usize = 1024;

/// The `OK` message of a held event (the GRASP spec string).
pub const PURGATORY_MESSAGE: &str = "purgatory: won't be served until git data arrives";

/// The `OK` message when the same event is already held.
pub const DUPLICATE_HELD_MESSAGE: &str = "duplicate: already held; won't be served until git data arrives";

/// Repositories, events and purgatory of one server.
#[derive(Debug)]
pub struct Hosting {
    store: EventStore,
    purgatory: Arc<Purgatory>,
    repos: Repositories,
    locks: IdentifierLocks,
    publisher: Publisher,
    origin: ServiceOrigin,
    metrics: Metrics,
    maintenance: Maintenance,
    released: tokio::sync::broadcast::Sender<ReleasedEvent>,
    expired: tokio::sync::broadcast::Sender<Event>,
    prs_collector: prs::Collector,
}

impl Hosting {
    /// Everything hosting needs; see the field accessors for what each is.
    pub fn new(
        store: EventStore,
        purgatory: Arc<Purgatory>,
        repos: Repositories,
        publisher: Publisher,
        origin: ServiceOrigin,
        metrics: Metrics,
    ) -> Self {
        let maintenance = Maintenance::new(metrics.clone());
        let (expired, _) = tokio::sync::broadcast::channel(4096);
        let hosting = Self {
            store,
            purgatory,
            repos,
            locks: IdentifierLocks::default(),
            publisher,
            origin,
            metrics,
            maintenance,
            released: tokio::sync::broadcast::channel(RELEASED_BUFFER).0,
            expired,
            prs_collector: prs::Collector::default(),
        };
        hosting.update_gauges();
        hosting
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Purgatory.
    pub fn purgatory(&self) -> &Purgatory {
        &self.purgatory
    }

    /// The bare repositories.
    pub fn repos(&self) -> &Repositories {
        &self.repos
    }

    /// This server's public origin.
    pub fn origin(&self) -> &ServiceOrigin {
        &self.origin
    }

    /// Events that expire in purgatory from now on, as they expire (relay sync refuses
    /// synced copies of them for a while: decision 10).
    pub fn expired_events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.expired.subscribe()
    }

    /// Background repacks of repositories that received data.
    pub fn maintenance(&self) -> &Maintenance {
        &self.maintenance
    }

    /// Every event released from purgatory from now on (after it was stored), for
    /// programs that react to them: a forge that shows a repository once its announcement
    /// is served, a notifier, a mirror. A receiver that falls more than 1,024 events behind
    /// gets `RecvError::Lagged` with the number it missed, then continues.
    pub fn subscribe_released(&self) -> tokio::sync::broadcast::Receiver<ReleasedEvent> {
        self.released.subscribe()
    }

    fn update_gauges(&self) {
        let counts = self.purgatory.counts();
        for (kind, n) in counts.held {
            self.metrics.purgatory_held.with_label_values(&[kind]).set(n as i64);
        }
        self.metrics.purgatory_placeholders.set(counts.placeholders as i64);
    }

    /// Held announcements with `identifier`, parsed.
    pub fn held_announcements(&self, identifier: &str) -> Vec<(HeldEvent, RepoAnnouncement)> {
        self.purgatory
            .held_for(identifier, HeldKind::Announcement)
            .into_iter()
            .filter_map(|e| RepoAnnouncement::parse(&e.event).ok().map(|a| (e, a)))
            .collect()
    }

    /// Held announcements and states at `coordinate` (several pending states can share one).
    pub fn held_at(&self, coordinate: &RepoCoordinate) -> Vec<HeldEvent> {
        [HeldKind::Announcement, HeldKind::State]
            .into_iter()
            .flat_map(|kind| self.purgatory.held_for(&coordinate.identifier, kind))
            .filter(|e| RepoCoordinate::of_event(&e.event).as_ref() == Some(coordinate))
            .collect()
    }

    /// Counts an event purgatory's cap `cap` refused.
    pub fn count_purgatory_refusal(&self, cap: crate::purgatory::bounds::CapKind) {
        self.metrics.purgatory_refused.with_label_values(&[cap.as_str()]).inc();
    }

    /// Holds an event (journaled before this returns).
    pub async fn hold(&self, entry: HeldEvent) -> Result<HoldOutcome, PurgatoryError> {
        let outcome = self.purgatory.hold(entry).await?;
        self.update_gauges();
        Ok(outcome)
    }

    /// Stores a held event and everything waiting for it, and delivers them live.
    async fn release(&self, entry: HeldEvent, report: &mut ProcessReport) {
        let mut queue = vec![entry];
        while let Some(entry) = queue.pop() {
            let id = entry.event.id;
            match self.publisher.publish(&entry.event).await {
                Ok(status) => {
                    crate::crash::point("release-after-store");
                    if status.is_success() {
                        tracing::info!(event_id = %id, kind = entry.kind.as_str(), "released from purgatory");
                        self.metrics.purgatory_released.with_label_values(&[entry.kind.as_str()]).inc();
                        report.released.push((id, entry.kind));
                        // Nobody subscribed is fine.
                        let _ = self.released.send(ReleasedEvent {
                            event: entry.event.clone(),
                            kind: entry.kind,
                            identifier: entry.identifier.clone(),
                        });
                    } else {
                        tracing::debug!(event_id = %id, ?status, "held event superseded; dropped");
                        report.superseded.push(id);
                    }
                    if let Err(e) = self.purgatory.remove(&[id]).await {
                        report.errors.push(e.to_string());
                    }
                    queue.extend(self.purgatory.dependents_of(&id));
                }
                Err(e) => report.errors.push(format!("releasing {id}: {e}")),
            }
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        tokio::task::spawn_blocking(f).await?
    }

    /// For each state, whether one of `repos` holds every object it names (each repository
    /// is opened once, however many states there are).
    async fn satisfiable(&self, repos: &[RepoRef], states: Vec<RepoState>) -> Vec<(RepoState, bool)> {
        let paths: Vec<_> = repos.iter().map(|r| self.repos.path(r)).collect();
        let checked = self
            .blocking(move || {
                let gits: Vec<git2::Repository> = paths.iter().filter_map(|p| refs::open(p).ok()).collect();
                Ok(states
                    .into_iter()
                    .map(|state| {
                        let oids: Vec<String> = state.refs.values().cloned().collect();
                        // Data for a malformed ref value can never arrive (decision 15b).
                        let here = state.is_well_formed()
                            && (oids.is_empty()
                                || gits.iter().any(|git| {
                                    refs::missing_objects(git, &oids).is_ok_and(|m| m.is_empty())
                                }));
                        (state, here)
                    })
                    .collect())
            })
            .await;
        checked.unwrap_or_default()
    }

    /// `refs/nostr/<id>` refs of a repository, by event id.
    async fn nostr_refs(&self, repo: &RepoRef) -> HashMap<EventId, String> {
        let path = self.repos.path(repo);
        self.blocking(move || Ok(refs::event_refs(&refs::open(&path)?, "refs/nostr/")?.into_iter().collect()))
            .await
            .unwrap_or_default()
    }

    /// Moves the ref `from` to `to` in `repo` if it still points at `commit`.
    async fn move_ref(&self, repo: &RepoRef, from: &str, to: &str, commit: &str) -> bool {
        let (path, from, to, commit) =
            (self.repos.path(repo), from.to_owned(), to.to_owned(), commit.to_owned());
        match self.blocking(move || refs::move_ref(&refs::open(&path)?, &from, &to, &commit)).await {
            Ok(moved) => moved,
            Err(e) => {
                tracing::warn!(repo = %repo, error = %e, "moving a pull request ref failed");
                false
            }
        }
    }

    async fn ref_target(&self, repo: &RepoRef, name: &str) -> Option<String> {
        let (path, name) = (self.repos.path(repo), name.to_owned());
        self.blocking(move || Ok(refs::ref_target(&refs::open(&path)?, &name))).await.ok().flatten()
    }

    async fn delete_ref(
        &self,
        repo: &RepoRef,
        name: &str,
        expected: Option<String>,
    ) -> Result<bool, GitError> {
        let (path, name) = (self.repos.path(repo), name.to_owned());
        self.blocking(move || {
            let git = refs::open(&path)?;
            let Ok(mut reference) = git.find_reference(&name) else { return Ok(false) };
            if expected.is_some_and(|e| reference.target().map(|t| t.to_string()) != Some(e)) {
                return Ok(false);
            }
            reference.delete()?;
            Ok(true)
        })
        .await
    }

    async fn follows_a_state(&self, repo: &RepoRef) -> bool {
        let path = self.repos.path(repo);
        self.blocking(move || Ok(refs::applied_state(&refs::open(&path)?).is_some())).await.unwrap_or(false)
    }

    /// The git-data step for every repository with `identifier`; see the module
    /// documentation. `arrival` says what happened, so only what it can affect is checked:
    /// a held event that just arrived is the only candidate for release, while new git data
    /// re-checks every held state and the pull request refs of the repositories.
    pub async fn process(&self, identifier: &RepoIdentifier, arrival: Arrival<'_>) -> ProcessReport {
        let _guard = self.locks.lock(identifier).await;
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
        let stored = match self.store.announcements(d).await {
            Ok(stored) => stored,
            Err(e) => {
                report.errors.push(e.to_string());
                return report;
            }
        };
        let held_anns = self.held_announcements(d);
        let all_anns: Vec<RepoAnnouncement> =
            stored.iter().cloned().chain(held_anns.iter().map(|(_, a)| a.clone())).collect();
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
            let mut states: Vec<(HeldEvent, RepoState)> =
                entries.into_iter().filter_map(|e| RepoState::parse(&e.event).ok().map(|s| (e, s))).collect();
            states.sort_by_key(|(_, s)| s.created_at);
            let authorized: Vec<(HeldEvent, RepoState)> = states
                .into_iter()
                .filter(|(_, s)| {
                    hosted
                        .iter()
                        .any(|r| MaintainerSet::from_announcements(r.owner, &all_anns).contains(&s.author))
                })
                .collect();
            let (entries, states): (Vec<HeldEvent>, Vec<RepoState>) = authorized.into_iter().unzip();
            let checked = self.satisfiable(&hosted, states).await;
            for (entry, (_, here)) in entries.into_iter().zip(checked) {
                if here {
                    self.release(entry, &mut report).await;
                }
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

    async fn align_all(
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
            let set = MaintainerSet::from_announcements(target.owner, all_anns);
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

    /// Given where the pull request's ref exists (`found`: served at `refs/nostr/<id>` or
    /// waiting at `refs/grasp/waiting/<id>`), releases the held pull request if one holds
    /// its `c` commit (a waiting ref moves to `refs/nostr/<id>`, and the ref is offered in
    /// the other repositories it addresses), and deletes refs holding another commit.
    async fn settle_pull_request(
        &self,
        entry: HeldEvent,
        found: Vec<FoundRef>,
        hosted: &[RepoRef],
        all_anns: &[RepoAnnouncement],
        identifier: &RepoIdentifier,
        report: &mut ProcessReport,
    ) {
        // A malformed `c` matches no commit: every ref found is deleted and the event waits
        // until it expires.
        let commit = commit_tag(&entry.event);
        let id = entry.event.id;
        let served = refs::nostr_ref(&id);
        let mut holder = None;
        for found in found {
            let FoundRef { repo, name, target } = found;
            // In a `/prs/` repository the event must also be the contributor's and name the
            // repository (GRASP-06).
            let belongs = !repo.is_prs() || prs::event_mismatch(&repo, &entry.event).is_none();
            if belongs
                && commit.as_ref() == Some(&target)
                && holder.is_none()
                && (name == served || self.move_ref(&repo, &name, &served, &target).await)
            {
                holder = Some(repo);
                continue;
            }
            // The pushed commit is not the one the event names: the ref goes, the event
            // keeps waiting for the right commit.
            if let Err(e) = self.delete_ref(&repo, &name, Some(target.clone())).await {
                report.errors.push(format!("{repo}: {e}"));
            }
            tracing::info!(repo = %repo, event_id = %id, pushed = %target, expected = ?commit, belongs, "deleted mismatching pull request ref");
            report.deleted_refs.push((repo.clone(), name));
            self.drop_placeholders(&[id]).await;
            self.collect_if_empty(&repo).await;
        }
        let (Some(source), Some(commit)) = (holder, commit) else { return };
        self.release(entry.clone(), report).await;
        self.drop_placeholders(&[id]).await;
        // Offer the PR in every announced repository here whose maintainers the PR addresses
        // (for a `/prs/` source this is the one-way GRASP-06 mirror).
        let targets: Vec<RepoRef> = hosted.iter().filter(|r| **r != source).cloned().collect();
        self.offer_pull_request(&entry.event, &source, &commit, &targets, all_anns, identifier, report).await;
    }

    /// Copies the commit of the accepted pull request `event` (at `refs/nostr/<id>` in
    /// `source`) with that ref into each of the announced `targets` whose maintainers it
    /// tags and that lack the ref.
    #[allow(clippy::too_many_arguments)]
    async fn offer_pull_request(
        &self,
        event: &Event,
        source: &RepoRef,
        commit: &str,
        targets: &[RepoRef],
        all_anns: &[RepoAnnouncement],
        identifier: &RepoIdentifier,
        report: &mut ProcessReport,
    ) {
        let name = format!("refs/nostr/{}", event.id.to_hex());
        let tagged: HashSet<_> = crate::nip34::EventReferences::of(event)
            .coordinates
            .into_iter()
            .filter(|c| c.kind == kinds::REPO_ANNOUNCEMENT && c.identifier == identifier.as_str())
            .map(|c| c.pubkey)
            .collect();
        for target in targets.iter().filter(|t| !t.is_prs()) {
            let set = MaintainerSet::from_announcements(target.owner, all_anns);
            if !tagged.iter().any(|pk| set.contains(pk)) || self.ref_target(target, &name).await.is_some() {
                continue;
            }
            let result = async {
                refs::copy_objects(&self.repos.path(source), &self.repos.path(target), &[commit.to_owned()])
                    .await?;
                let (path, name, commit) = (self.repos.path(target), name.clone(), commit.to_owned());
                self.blocking(move || {
                    refs::open(&path)?.reference(
                        &name,
                        git2::Oid::from_str(&commit)?,
                        true,
                        "grasp: pull request",
                    )?;
                    Ok(())
                })
                .await
            }
            .await;
            match result {
                Ok(()) => report.copied_into.push(target.clone()),
                Err(e) => report.errors.push(format!("{target}: {e}")),
            }
        }
    }

    /// A repository just became served: pull requests accepted earlier through `/prs/`
    /// (GRASP-06) for its identifier are offered in it too.
    async fn offer_earlier_prs(
        &self,
        target: &RepoRef,
        all_anns: &[RepoAnnouncement],
        identifier: &RepoIdentifier,
        report: &mut ProcessReport,
    ) {
        let (repos, d) = (self.repos.clone(), identifier.clone());
        let sources = self.blocking(move || Ok(prs::with_identifier(&repos, &d))).await.unwrap_or_default();
        for source in sources {
            // Refs still waiting for their event (placeholders) are not accepted yet.
            let accepted: Vec<(EventId, String)> = self
                .nostr_refs(&source)
                .await
                .into_iter()
                .filter(|(id, _)| self.purgatory.placeholder(id).is_none())
                .collect();
            let ids: Vec<EventId> = accepted.iter().map(|(id, _)| *id).collect();
            let Ok(events) = self.store.events_among(&ids).await else { continue };
            for event in events {
                let Some((_, commit)) = accepted.iter().find(|(id, _)| *id == event.id) else { continue };
                if commit_tag(&event).as_deref() == Some(commit.as_str()) {
                    self.offer_pull_request(
                        &event,
                        &source,
                        commit,
                        std::slice::from_ref(target),
                        all_anns,
                        identifier,
                        report,
                    )
                    .await;
                }
            }
        }
    }

    /// Where the commit of a pull request may be at `refs/nostr/<id>`: the announced
    /// repositories of its identifier, the `/prs/` repositories its `clone` tag names here,
    /// and wherever its commit was pushed before the event arrived (so a push that does not
    /// meet the event is found and deleted).
    fn pull_request_repos(&self, event: &Event, hosted: &[RepoRef]) -> Vec<RepoRef> {
        let mut repos = hosted.to_vec();
        repos.extend(prs::named_repositories(event, &self.origin));
        repos.extend(self.purgatory.placeholder(&event.id).and_then(|p| p.repo()));
        let mut seen = HashSet::new();
        repos.retain(|r| seen.insert(r.clone()) && self.repos.exists(r));
        repos
    }

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

    /// Removes a repository that was created only for a held announcement, unless it got
    /// refs or a stored announcement meanwhile.
    async fn remove_repo_if_unused(&self, repo: &RepoRef) {
        if matches!(self.store.announcements(repo.identifier.as_str()).await, Ok(a) if a.iter().any(|a| a.owner == repo.owner))
        {
            return;
        }
        let probe = self.repos.path(repo);
        let empty =
            self.blocking(move || Ok(refs::branches_and_tags(&refs::open(&probe)?)?.is_empty())).await;
        if !matches!(empty, Ok(true)) {
            return;
        }
        match self.repos.remove(repo).await {
            Ok(()) => tracing::info!(repo = %repo, "removed repository of an expired announcement"),
            Err(e) => tracing::warn!(repo = %repo, error = %e, "removing repository failed"),
        }
    }

    /// Cleans up after held entries that were taken out of purgatory without being
    /// released: what waited for them goes too, and a repository created only for an
    /// announcement among them is removed.
    pub async fn discard(&self, entries: Vec<HeldEvent>) {
        self.drop_entries(entries, false).await;
        self.update_gauges();
    }

    async fn drop_entries(&self, entries: Vec<HeldEvent>, expired: bool) {
        let mut queue = entries;
        while let Some(entry) = queue.pop() {
            if expired {
                // Nobody listening (sync off) is fine.
                let _ = self.expired.send(entry.event.clone());
                self.metrics.purgatory_expired.with_label_values(&[entry.kind.as_str()]).inc();
                tracing::info!(event_id = %entry.event.id, kind = entry.kind.as_str(), "purgatory entry expired");
            }
            let dependents: Vec<EventId> =
                self.purgatory.dependents_of(&entry.event.id).iter().map(|e| e.event.id).collect();
            if let Ok(removed) = self.purgatory.remove(&dependents).await {
                queue.extend(removed);
            }
            if entry.kind == HeldKind::Announcement && entry.created_repo {
                if let Ok(identifier) = RepoIdentifier::new(&entry.identifier) {
                    self.remove_repo_if_unused(&RepoRef::new(entry.event.pubkey, identifier)).await;
                }
            }
        }
    }

    /// Drops everything past its deadline: held events (and their dependents; the bare
    /// repository of an announcement that never got data) and unmatched `refs/nostr` refs.
    pub async fn sweep(&self) {
        let (held, placeholders) = match self.purgatory.take_expired(now_ms()).await {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!(error = %e, "purgatory sweep failed");
                return;
            }
        };
        self.drop_entries(held, true).await;
        for placeholder in placeholders {
            self.metrics.purgatory_placeholders_expired.inc();
            let Some(repo) = placeholder.repo() else { continue };
            let name = refs::waiting_ref(&placeholder.event_id);
            match self.delete_ref(&repo, &name, Some(placeholder.commit.clone())).await {
                Ok(true) => tracing::info!(repo = %repo, %name, "deleted unmatched pull request ref"),
                Ok(false) => {}
                Err(e) => tracing::warn!(repo = %repo, %name, error = %e, "deleting unmatched ref failed"),
            }
            self.collect_if_empty(&repo).await;
        }
        self.update_gauges();
    }

    /// Runs [`Hosting::sweep`] at every deadline, for as long as the server runs.
    pub async fn run_expiry(self: Arc<Self>) {
        loop {
            let now = now_ms();
            match self.purgatory.next_deadline() {
                Some(deadline) if deadline <= now => self.sweep().await,
                next => {
                    let wait = next.map_or(60_000, |d| (d - now).min(60_000));
                    self.purgatory.changed_or(Duration::from_millis(wait)).await;
                }
            }
        }
    }

    /// A NIP-09 deletion also removes the author's matching held events.
    pub async fn purge_deleted(&self, deletion: &Event) {
        let by_id = deletion.tags.event_ids().filter_map(|id| self.purgatory.get(id));
        let by_coordinate = deletion
            .tags
            .coordinates()
            .map(|c| RepoCoordinate {
                kind: c.kind.as_u16(),
                pubkey: c.public_key,
                identifier: c.identifier.clone(),
            })
            .flat_map(|c| self.held_at(&c))
            .filter(|e| e.event.created_at <= deletion.created_at);
        let mut targets: Vec<EventId> = by_id
            .chain(by_coordinate)
            .filter(|e| e.event.pubkey == deletion.pubkey)
            .map(|e| e.event.id)
            .collect();
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return;
        }
        match self.purgatory.remove(&targets).await {
            Ok(removed) => {
                tracing::info!(deleted = removed.len(), "deletion request removed held events");
                self.drop_entries(removed, false).await;
            }
            Err(e) => tracing::warn!(error = %e, "removing deleted held events failed"),
        }
        self.update_gauges();
    }

    /// A push is about to use held events: the state it matched (with the owner's held
    /// announcement, which that state releases) and the held pull requests whose commit it
    /// pushes must not expire while it lands. Nothing else is extended: naming an id in a
    /// ref is not matching it (decision 30).
    pub async fn extend_for_push(&self, repo: &RepoRef, decision: &PushDecision, updates: &[RefUpdate]) {
        let PushDecision::Authorized { state } = decision else { return };
        let mut ids: Vec<EventId> = updates
            .iter()
            .filter(|u| !u.is_noop() && !u.is_delete())
            .filter_map(|u| Some((nostr_ref_id(&u.name)?, u.new.as_str())))
            .filter_map(|(id, pushed)| {
                let entry = self.purgatory.get(&id).filter(|e| e.kind == HeldKind::PullRequest)?;
                (commit_tag(&entry.event).as_deref() == Some(pushed)).then_some(id)
            })
            .collect();
        if let Some(id) = state {
            ids.push(*id);
            ids.extend(
                self.held_announcements(repo.identifier.as_str())
                    .into_iter()
                    .filter(|(_, a)| a.owner == repo.owner)
                    .map(|(e, _)| e.event.id),
            );
        }
        ids.retain(|id| self.purgatory.contains(id));
        if !ids.is_empty() {
            if let Err(e) = self.purgatory.extend(&ids, self.purgatory.timers().push_extension).await {
                tracing::warn!(error = %e, "extending held events failed");
            }
        }
    }

    /// After a successful push from `client` (its address, when known): each
    /// `refs/nostr/<id>` ref for an event not known here becomes a placeholder and moves out
    /// of the served namespace to `refs/grasp/waiting/<id>`, where it waits for its event.
    /// Returns how many refs moved.
    pub async fn record_placeholders(
        &self,
        repo: &RepoRef,
        updates: &[RefUpdate],
        client: Option<IpAddr>,
    ) -> usize {
        let client = client.map(crate::rate_limit::address_group);
        let now = now_ms();
        let expires_at = now + self.purgatory.timers().pr_ref_expiry.as_millis() as u64;
        let mut placeholders = Vec::new();
        for update in updates.iter().filter(|u| !is_zero_oid(&u.new) && !u.is_noop()) {
            let Some(id) = nostr_ref_id(&update.name) else { continue };
            let known = self.purgatory.contains(&id)
                || !matches!(self.store.status(&id).await, Ok(DatabaseEventStatus::NotExistent));
            if !known {
                placeholders.push(Placeholder {
                    event_id: id,
                    commit: update.new.clone(),
                    owner: repo.owner,
                    identifier: repo.identifier.as_str().to_owned(),
                    namespace: repo.namespace,
                    created_at: now,
                    expires_at,
                    client,
                });
            }
        }
        if placeholders.is_empty() {
            return 0;
        }
        // Recorded first (one journal write), so a crash before the move leaves a ref that
        // startup recovery moves; then moved out of the served namespace.
        if let Err(e) = self.purgatory.add_placeholders(placeholders.clone()).await {
            tracing::warn!(repo = %repo, error = %e, "recording pull request placeholders failed");
            return 0;
        }
        let moves: Vec<(String, String, String)> = placeholders
            .iter()
            .map(|p| (refs::nostr_ref(&p.event_id), refs::waiting_ref(&p.event_id), p.commit.clone()))
            .collect();
        let path = self.repos.path(repo);
        let parked = match self.blocking(move || refs::move_refs(&refs::open(&path)?, &moves)).await {
            Ok(moved) => moved,
            Err(e) => {
                tracing::warn!(repo = %repo, error = %e, "moving pull request refs failed");
                0
            }
        };
        if parked > 0 {
            tracing::debug!(repo = %repo, parked, "pull request refs wait for their event");
            // A stock git server serving this repository must hide them as well (a
            // repository made by another program may lack the setting); many loose refs
            // are packed by the background maintenance.
            self.configure_for_serving(repo).await;
            if !repo.is_prs() {
                self.maintenance.schedule(self.repos.path(repo));
            }
        }
        self.update_gauges();
        parked
    }

    /// Waiting refs (`refs/grasp/waiting/<id>`, with their commits) that have no placeholder
    /// (its record was lost): for an event still unknown a placeholder is recorded, so the
    /// ref expires like any other; a pull request here that names the commit gets its ref
    /// served (the git-data step then settles it); anything else is deleted. Returns how many
    /// refs were handled.
    pub async fn adopt_waiting_refs(&self, repo: &RepoRef, waiting: Vec<(EventId, String)>) -> usize {
        if waiting.is_empty() {
            return 0;
        }
        let ids: Vec<EventId> = waiting.iter().map(|(id, _)| *id).collect();
        let named = match EventView::named_events(self, &ids).await {
            Ok(named) => named,
            Err(e) => {
                tracing::warn!(repo = %repo, error = %e, "reading the events of waiting refs failed");
                return 0;
            }
        };
        let now = now_ms();
        let expires_at = now + self.purgatory.timers().pr_ref_expiry.as_millis() as u64;
        let mut placeholders = Vec::new();
        for (id, commit) in &waiting {
            let waiting_name = refs::waiting_ref(id);
            match named.get(id) {
                None => placeholders.push(Placeholder {
                    event_id: *id,
                    commit: commit.clone(),
                    owner: repo.owner,
                    identifier: repo.identifier.as_str().to_owned(),
                    namespace: repo.namespace,
                    created_at: now,
                    expires_at,
                    client: None,
                }),
                Some(Named::PullRequest(event)) if commit_tag(event).as_deref() == Some(commit.as_str()) => {
                    self.move_ref(repo, &waiting_name, &refs::nostr_ref(id), commit).await;
                }
                Some(_) => {
                    if let Err(e) = self.delete_ref(repo, &waiting_name, Some(commit.clone())).await {
                        tracing::warn!(repo = %repo, error = %e, "deleting a stale waiting ref failed");
                    }
                }
            }
        }
        if let Err(e) = self.purgatory.add_placeholders(placeholders).await {
            tracing::warn!(repo = %repo, error = %e, "recording placeholders of waiting refs failed");
        }
        self.update_gauges();
        waiting.len()
    }

    /// Takes placeholders out of purgatory (their ref was matched or deleted).
    async fn drop_placeholders(&self, ids: &[EventId]) {
        if let Err(e) = self.purgatory.remove_placeholders(ids).await {
            tracing::warn!(error = %e, "removing placeholders failed");
        }
    }

    /// Writes the repository's serving settings ([`refs::SERVING_SETTINGS`]) into its git
    /// config, so any other server of the directory (`git http-backend` behind grasp-proxy,
    /// a forge behind grasp-hook) serves it as this process does. A failure is logged: this
    /// process passes the settings to git itself regardless.
    pub async fn configure_for_serving(&self, repo: &RepoRef) {
        let path = self.repos.path(repo);
        if let Err(e) = self.blocking(move || refs::configure_for_serving(&path)).await {
            tracing::warn!(repo = %repo, error = %e, "writing the repository's serving config failed");
        }
    }

    /// [`Hosting::configure_for_serving`] for every repository on disk: for a frontend whose
    /// git server reads the repositories' own config, at start (repositories made by older
    /// versions).
    pub async fn configure_all_for_serving(&self) {
        let repos = self.repos.clone();
        let all = self.blocking(move || Ok(repos.all())).await.unwrap_or_default();
        for repo in &all {
            self.configure_for_serving(repo).await;
        }
        tracing::info!(repositories = all.len(), "repository serving config written");
    }
}

/// Push authorization sees stored **and** held events.
impl EventView for Hosting {
    fn announcements<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RepoAnnouncement>, StoreError>> {
        Box::pin(async move {
            let mut all = self.store.announcements(identifier).await?;
            all.extend(self.held_announcements(identifier).into_iter().map(|(_, a)| a));
            Ok(all)
        })
    }

    fn states<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, Result<Vec<RepoState>, StoreError>> {
        Box::pin(async move {
            let mut all = EventView::states(&self.store, identifier).await?;
            all.extend(self.purgatory.held_states(identifier).iter().map(|s| RepoState::clone(s)));
            Ok(all)
        })
    }

    fn named_events<'a>(
        &'a self,
        ids: &'a [EventId],
    ) -> BoxFuture<'a, Result<HashMap<EventId, Named>, StoreError>> {
        Box::pin(async move {
            let mut named = self.store.named_events(ids).await?;
            for id in ids {
                if let Some(entry) = self.purgatory.get(id) {
                    named.insert(*id, Named::of(entry.event));
                }
            }
            Ok(named)
        })
    }

    fn placeholders(&self, repo: &RepoRef, client: Option<IpAddr>, ids: &[EventId]) -> PlaceholderRoom {
        let waiting = ids
            .iter()
            .filter(|id| self.purgatory.placeholder(id).and_then(|p| p.repo()).as_ref() == Some(repo))
            .copied()
            .collect();
        PlaceholderRoom {
            in_repository: self.purgatory.placeholder_count_in(repo),
            of_client: client.map(|c| self.purgatory.placeholder_count_of(&c)),
            waiting,
        }
    }
}
