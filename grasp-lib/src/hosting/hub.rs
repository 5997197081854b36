//! The hub where repositories, events and purgatory meet: what one server hosts, and the
//! small steps every other part of hosting is built from (holding and releasing an event,
//! reading and moving a repository's refs).

use std::collections::HashMap;
use std::sync::Arc;

use nostr::{Event, EventId, PublicKey};

use super::align::{IdentifierLocks, ProcessReport};
use crate::cluster::{ClusterGuard, ClusterLocks, Leadership};
use crate::git::maintenance::Maintenance;
use crate::git::refs;
use crate::git::{prs, GitError, RepoRef, Repositories};
use crate::maintainers::{MaintainerModel, MaintainerSet};
use crate::metrics::Metrics;
use crate::nip34::{RepoAnnouncement, RepoCoordinate, RepoState};
use crate::origin::ServiceOrigin;
use crate::purgatory::{HeldEvent, HeldKind, HoldOutcome, Purgatory, PurgatoryError};
use crate::store::{EventStore, Publisher, StoreError};

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
    pub(super) store: EventStore,
    pub(super) purgatory: Arc<Purgatory>,
    pub(super) repos: Repositories,
    pub(super) locks: IdentifierLocks,
    pub(super) publisher: Publisher,
    pub(super) origin: ServiceOrigin,
    pub(super) metrics: Metrics,
    pub(super) maintenance: Maintenance,
    pub(super) released: tokio::sync::broadcast::Sender<ReleasedEvent>,
    pub(super) expired: tokio::sync::broadcast::Sender<Event>,
    pub(super) prs_collector: prs::Collector,
    pub(super) maintainer_model: MaintainerModel,
    pub(super) fetching: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// Held events whose data is here but which the store refused to take (full, broken):
    /// kept past their deadline and released again at the next sweep.
    pub(super) release_failed: std::sync::Mutex<HashMap<EventId, String>>,
    /// Locks shared with the other nodes of a PostgreSQL cluster (none on a single node).
    pub(super) cluster: Option<ClusterLocks>,
    /// Whether this node runs the cluster's singleton jobs (always, on a single node).
    pub(super) leadership: Leadership,
}

/// Marks an identifier as having a hunted fetch running (see
/// [`Hosting::fetch_in_progress`]); dropping it ends the mark.
#[derive(Debug)]
pub struct FetchInProgress {
    identifier: String,
    fetching: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl Drop for FetchInProgress {
    fn drop(&mut self) {
        let mut fetching = self.fetching.lock().expect("fetching map poisoned");
        if let Some(count) = fetching.get_mut(&self.identifier) {
            *count -= 1;
            if *count == 0 {
                fetching.remove(&self.identifier);
            }
        }
    }
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
        let kinds = || HeldKind::ALL.iter().map(|k| k.as_str());
        Metrics::prime(&metrics.purgatory_released, kinds());
        Metrics::prime(&metrics.purgatory_expired, kinds());
        Metrics::prime(
            &metrics.purgatory_refused,
            crate::purgatory::bounds::CapKind::ALL.iter().map(|c| c.as_str()),
        );
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
            maintainer_model: MaintainerModel::default(),
            fetching: Arc::default(),
            release_failed: std::sync::Mutex::default(),
            cluster: None,
            leadership: Leadership::single(),
        };
        hosting.update_gauges();
        hosting
    }

    /// The same hosting under another maintainer rule (default: maintainer model v3).
    pub fn with_maintainer_model(mut self, model: MaintainerModel) -> Self {
        self.maintainer_model = model;
        self
    }

    /// The same hosting as one node of a cluster: `locks` are shared with the other nodes
    /// and `leadership` says when this node runs the singleton jobs.
    pub fn in_cluster(mut self, locks: ClusterLocks, leadership: Leadership) -> Self {
        self.maintenance = self.maintenance.with_cluster(locks.clone());
        self.cluster = Some(locks);
        self.leadership = leadership;
        self
    }

    /// Whether this node runs the cluster's singleton jobs.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// The cross-node lock `name`, on a cluster (`None` on a single node, whose local locks
    /// suffice). An unreachable database is logged, and the caller goes on without it: its
    /// own queries fail the same way.
    pub async fn cluster_lock(&self, name: &str) -> Option<ClusterGuard> {
        let locks = self.cluster.as_ref()?;
        match locks.lock(name).await {
            Ok(guard) => Some(guard),
            Err(e) => {
                tracing::warn!(lock = name, error = %e, "going on without the cluster lock");
                None
            }
        }
    }

    /// Catches up with what other nodes changed in a shared purgatory (see
    /// [`Purgatory::refresh`]); a failure is logged and the view stays as it was.
    pub async fn catch_up(&self) {
        if let Err(e) = self.purgatory.refresh().await {
            tracing::warn!(error = %e, "catching up with the shared purgatory failed");
        }
    }

    /// The maintainer rule every decision of this server applies.
    pub fn maintainer_model(&self) -> MaintainerModel {
        self.maintainer_model
    }

    /// The confirmed maintainers of `owner`'s coordinate among `announcements` (one
    /// identifier, stored and held).
    pub fn maintainer_set(&self, owner: PublicKey, announcements: &[RepoAnnouncement]) -> MaintainerSet {
        MaintainerSet::from_announcements(self.maintainer_model, owner, announcements)
    }

    /// Marks a hunted fetch for `identifier` as running until the mark is dropped: its held
    /// events do not expire meanwhile (a large repository can take longer than the expiry),
    /// and get a short grace after it ends.
    pub fn fetch_in_progress(&self, identifier: &str) -> FetchInProgress {
        *self.fetching.lock().expect("fetching map poisoned").entry(identifier.to_owned()).or_default() += 1;
        FetchInProgress { identifier: identifier.to_owned(), fetching: self.fetching.clone() }
    }

    /// Identifiers with a hunted fetch running now.
    pub(super) fn fetching_identifiers(&self) -> std::collections::HashSet<String> {
        self.fetching.lock().expect("fetching map poisoned").keys().cloned().collect()
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

    pub(super) fn update_gauges(&self) {
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

    /// Every announcement with `identifier` that counts for maintainer sets: stored, held
    /// with their repository, and held maintainer companions (an acceptance waiting for the
    /// announcement that invited it). For each author the newest counts
    /// ([`MaintainerSet::from_announcements`]).
    pub async fn maintainer_announcements(
        &self,
        identifier: &str,
    ) -> Result<Vec<RepoAnnouncement>, StoreError> {
        let mut all = self.store.announcements(identifier).await?;
        let held = [HeldKind::Announcement, HeldKind::Dependent]
            .into_iter()
            .flat_map(|kind| self.purgatory.held_for(identifier, kind))
            .filter_map(|e| RepoAnnouncement::parse(&e.event).ok());
        all.extend(held);
        Ok(all)
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
    pub(super) async fn release(&self, entry: HeldEvent, report: &mut ProcessReport) {
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
                    self.release_failed.lock().expect("release_failed poisoned").remove(&id);
                    queue.extend(self.purgatory.dependents_of(&id));
                }
                Err(e) => {
                    // Its data is here: it stays held (past its deadline) and is released
                    // again at the next sweep.
                    tracing::warn!(event_id = %id, error = %e, "releasing a held event failed; it stays held and is retried");
                    self.release_failed
                        .lock()
                        .expect("release_failed poisoned")
                        .insert(id, entry.identifier.clone());
                    report.errors.push(format!("releasing {id}: {e}"));
                }
            }
        }
    }

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        tokio::task::spawn_blocking(f).await?
    }

    /// For each state, whether one of `repos` holds every object it names (each repository
    /// is opened once, however many states there are).
    pub(super) async fn satisfiable(
        &self,
        repos: &[RepoRef],
        states: Vec<RepoState>,
    ) -> Vec<(RepoState, bool)> {
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
    pub(super) async fn nostr_refs(&self, repo: &RepoRef) -> HashMap<EventId, String> {
        let path = self.repos.path(repo);
        self.blocking(move || Ok(refs::event_refs(&refs::open(&path)?, "refs/nostr/")?.into_iter().collect()))
            .await
            .unwrap_or_default()
    }

    /// Moves the ref `from` to `to` in `repo` if it still points at `commit`.
    pub(super) async fn move_ref(&self, repo: &RepoRef, from: &str, to: &str, commit: &str) -> bool {
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

    pub(super) async fn ref_target(&self, repo: &RepoRef, name: &str) -> Option<String> {
        let (path, name) = (self.repos.path(repo), name.to_owned());
        self.blocking(move || Ok(refs::ref_target(&refs::open(&path)?, &name))).await.ok().flatten()
    }

    pub(super) async fn delete_ref(
        &self,
        repo: &RepoRef,
        name: &str,
        expected: Option<String>,
    ) -> Result<bool, GitError> {
        let (path, name) = (self.repos.path(repo), name.to_owned());
        self.blocking(move || refs::delete_ref(&refs::open(&path)?, &name, expected.as_deref())).await
    }

    pub(super) async fn follows_a_state(&self, repo: &RepoRef) -> bool {
        let path = self.repos.path(repo);
        self.blocking(move || Ok(refs::applied_state(&refs::open(&path)?).is_some())).await.unwrap_or(false)
    }
}
