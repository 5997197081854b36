//! The GRASP-01 policy: gathers facts from the event store and applies [`super::decide`].

use futures::future::BoxFuture;
use nostr::{Event, Timestamp};

use super::decide::{self, DeletionFacts, ListsService, RelationFacts};
use super::{EventPolicy, Prefix, Verdict};
use crate::git::{RepoRef, Repositories};
use crate::git_data::{process_newly_available_git_data, IdentifierLocks};
use crate::metrics::Metrics;
use crate::nip34::{kinds, EventReferences, RepoAnnouncement, RepoCoordinate, RepoState, MAX_REFERENCES};
use crate::origin::ServiceOrigin;
use crate::store::{EventStore, StoreError};

/// Store-backed GRASP-01 acceptance policy. Once an event is stored it also acts on it:
/// an announcement that lists this server gets its bare repository, and every announcement
/// or state triggers the git-data step so repositories follow their state.
#[derive(Debug, Clone)]
pub struct GraspPolicy {
    store: EventStore,
    origin: ServiceOrigin,
    repos: Repositories,
    locks: IdentifierLocks,
    metrics: Metrics,
}

impl GraspPolicy {
    /// A policy for a server reachable at `origin`, reading facts from `store` and hosting
    /// repositories in `repos`.
    pub fn new(
        store: EventStore,
        origin: ServiceOrigin,
        repos: Repositories,
        locks: IdentifierLocks,
        metrics: Metrics,
    ) -> Self {
        Self { store, origin, repos, locks, metrics }
    }

    async fn provision(&self, event: &Event) {
        let identifier = match event.kind.as_u16() {
            kinds::REPO_ANNOUNCEMENT => {
                let Ok(ann) = RepoAnnouncement::parse(event) else { return };
                if ListsService::of(&ann, &self.origin).both() {
                    let repo = RepoRef::new(ann.owner, ann.identifier.clone());
                    match self.repos.create(&repo).await {
                        Ok(true) => {
                            self.metrics.repos_created.inc();
                            tracing::info!(repo = %repo, "repository created");
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(repo = %repo, error = %e, "creating repository failed"),
                    }
                }
                ann.identifier
            }
            kinds::REPO_STATE => match RepoState::parse(event) {
                Ok(state) => state.identifier,
                Err(_) => return,
            },
            _ => return,
        };
        let report =
            process_newly_available_git_data(&self.repos, &self.locks, &self.store, &identifier, None, &[])
                .await;
        self.metrics.repos_aligned.inc_by(report.aligned.len() as u64);
    }

    async fn decide(&self, event: &Event) -> Result<Verdict, StoreError> {
        if let Some(verdict) = decide::preliminary(event, Timestamp::now()) {
            return Ok(verdict);
        }
        match event.kind.as_u16() {
            kinds::REPO_ANNOUNCEMENT => {
                let ann = match RepoAnnouncement::parse(event) {
                    Ok(ann) => ann,
                    Err(e) => return Ok(Verdict::reject(Prefix::Invalid, "malformed", e.to_string())),
                };
                let stored = self.store.announcements(ann.identifier.as_str()).await?;
                Ok(decide::announcement(&ann, &self.origin, &stored))
            }
            kinds::REPO_STATE => {
                let state = match RepoState::parse(event) {
                    Ok(state) => state,
                    Err(e) => return Ok(Verdict::reject(Prefix::Invalid, "malformed", e.to_string())),
                };
                let d = state.identifier.as_str();
                let stored = self.store.announcements(d).await?;
                let latest_own = self.store.latest_state_by(state.author, d).await?.map(|e| e.created_at);
                Ok(decide::state(&state, &stored, latest_own))
            }
            kinds::DELETION => Ok(decide::deletion(&event.pubkey, &self.deletion_facts(event).await?)),
            kinds::USER_GRASP_LIST => Ok(Verdict::Accept),
            _ => Ok(decide::related(self.relation_facts(event).await?)),
        }
    }

    async fn relation_facts(&self, event: &Event) -> Result<RelationFacts, StoreError> {
        let refs = EventReferences::of(event);
        let mut facts = RelationFacts::default();
        for coordinate in &refs.coordinates {
            if self.store.at_coordinate(coordinate).await?.is_some() {
                facts.tags_stored_coordinate = true;
                return Ok(facts);
            }
        }
        if !self.store.events_among(&refs.event_ids).await?.is_empty() {
            facts.tags_stored_event = true;
            return Ok(facts);
        }
        let own_coordinate = RepoCoordinate::of_event(event);
        facts.tagged_by_stored = self.store.is_referenced(&event.id, own_coordinate.as_ref()).await?;
        Ok(facts)
    }

    /// NIP-09 names targets with `e` and `a` tags only (not `E`/`A`/`q`).
    async fn deletion_facts(&self, event: &Event) -> Result<DeletionFacts, StoreError> {
        let ids: Vec<_> = event.tags.event_ids().copied().take(MAX_REFERENCES).collect();
        let targets = self.store.events_among(&ids).await?;
        let mut coordinates = Vec::new();
        for c in event.tags.coordinates().take(MAX_REFERENCES) {
            let c = RepoCoordinate {
                kind: c.kind.as_u16(),
                pubkey: c.public_key,
                identifier: c.identifier.clone(),
            };
            let stored = self.store.at_coordinate(&c).await?.is_some();
            coordinates.push((c, stored));
        }
        Ok(DeletionFacts { stored_target_authors: targets.iter().map(|e| e.pubkey).collect(), coordinates })
    }
}

impl EventPolicy for GraspPolicy {
    fn evaluate<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            self.decide(event).await.unwrap_or_else(|e| {
                tracing::warn!(event_id = %event.id, error = %e, "policy could not read the store");
                Verdict::reject(Prefix::Error, "store", "could not read the event store; try again later")
            })
        })
    }

    fn stored<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(self.provision(event))
    }
}
