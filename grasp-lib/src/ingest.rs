//! Ingest: what happens to an event the relay received, between "its id and signature are
//! valid" and "store it". It gathers facts from the store and purgatory, applies the pure
//! rules of [`crate::policy::decide`] (GRASP-01 and GRASP-06) and
//! [`crate::policy::curate`] (the operator's lists, GRASP-05 archive), holds events whose
//! git data is not here yet, runs the git-data step for them and hands them to hunting.
//!
//! It answers the relay through the [`EventPolicy`] trait, so the relay engine knows
//! nothing of purgatory: `Hold` and `Released` verdicts say the event was kept here.

use std::sync::Arc;

use futures::future::BoxFuture;
use nostr::{Event, EventId, Timestamp};

use crate::access::PrivateAccess;
use crate::curation::{Curation, Selectors};
use crate::git::RepoRef;
use crate::hosting::{Arrival, Hosting, DUPLICATE_HELD_MESSAGE, PURGATORY_MESSAGE};
use crate::hunt::HuntRequests;
use crate::nip34::{
    kinds, raw_commit_tag, EventReferences, RepoAnnouncement, RepoCoordinate, RepoIdentifier, RepoState,
    MAX_REFERENCES,
};
use crate::policy::curate;
use crate::policy::decide::{self, DeletionFacts, ListsService, PullRequestFacts, RelationFacts};
use crate::policy::{EventPolicy, EventSource, Prefix, Verdict};
use crate::purgatory::bounds::CapExceeded;
use crate::purgatory::{HeldEvent, HeldKind, HoldOutcome, PurgatoryError};
use crate::store::StoreError;
use crate::sync::plus::EligibleAuthors;

/// Why the policy could not decide (answered `error:`).
#[derive(Debug, thiserror::Error)]
enum PolicyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Purgatory(#[from] PurgatoryError),
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
}

/// Store- and purgatory-backed ingest of GRASP events (GRASP-01, -05, -06, curation).
///
/// New announcements, states, pull requests and pull request updates are held until their
/// git data is here (released at once when it already is); events that relate only to a
/// held repository wait with it. An announcement that lists this server gets its bare
/// repository immediately, so the push that brings the data can land. Held events are
/// handed to the hunter, which looks for their data at the other clone URLs.
#[derive(Debug, Clone)]
pub struct Ingest {
    hosting: Arc<Hosting>,
    hunt: HuntRequests,
    prs_hosting: bool,
    curation: Arc<Curation>,
    archive: Arc<Selectors>,
    access: Option<Arc<PrivateAccess>>,
    followed: EligibleAuthors,
}

fn malformed(e: impl std::fmt::Display) -> Verdict {
    Verdict::reject(Prefix::Invalid, "malformed", e.to_string())
}

fn held() -> Verdict {
    Verdict::Hold { message: PURGATORY_MESSAGE.to_owned() }
}

impl Ingest {
    /// Ingest acting on `hosting` (without hunting or GRASP-06; see
    /// [`Ingest::with_hunting`] and [`Ingest::with_prs_hosting`]).
    pub fn new(hosting: Arc<Hosting>) -> Self {
        Self {
            hosting,
            hunt: HuntRequests::disabled(),
            prs_hosting: false,
            curation: Arc::new(Curation::default()),
            archive: Arc::new(Selectors::default()),
            access: None,
            followed: EligibleAuthors::default(),
        }
    }

    /// Takes the profiles (kind 0) and relay lists (kind 10002) of the people Sync Plus
    /// follows: nothing else makes those kinds relevant here.
    pub fn with_followed(mut self, followed: EligibleAuthors) -> Self {
        self.followed = followed;
        self
    }

    /// On a private service (GRASP-08), takes announcements only from members.
    pub fn with_access(mut self, access: Option<Arc<PrivateAccess>>) -> Self {
        self.access = access;
        self
    }

    /// Applies the operator's allow / deny lists (whatever they are when an event arrives).
    pub fn with_curation(mut self, curation: Arc<Curation>) -> Self {
        self.curation = curation;
        self
    }

    /// Archives (GRASP-05) announcements this list names that do not list this server.
    pub fn with_archive(mut self, archive: Arc<Selectors>) -> Self {
        self.archive = archive;
        self
    }

    /// Takes pull requests GRASP-01 would refuse when they name this server's
    /// `/prs/<signer npub>/<identifier>.git` (GRASP-06).
    pub fn with_prs_hosting(mut self, on: bool) -> Self {
        self.prs_hosting = on;
        self
    }

    /// Hands every event this policy holds to `hunt`.
    pub fn with_hunting(mut self, hunt: HuntRequests) -> Self {
        self.hunt = hunt;
        self
    }

    async fn decide(&self, event: &Event, source: EventSource) -> Result<Verdict, PolicyError> {
        if let Some(verdict) = decide::preliminary(event, Timestamp::now()) {
            return Ok(verdict);
        }
        let lists = self.curation.lists();
        if let Some(verdict) = curate::denied(&lists, &event.pubkey, &curate::repositories_of(event)) {
            return Ok(verdict);
        }
        // On a cluster, what other nodes hold counts too.
        self.hosting.catch_up().await;
        if self.hosting.purgatory().contains(&event.id) {
            return Ok(Verdict::Hold { message: DUPLICATE_HELD_MESSAGE.to_owned() });
        }
        let member = self.access.as_ref().map(|access| access.is_member(&event.pubkey));
        if let Some(verdict) = decide::private_service(event.kind.as_u16(), member) {
            return Ok(verdict);
        }
        if let Some(verdict) = decide::identity(event.kind.as_u16(), self.followed.contains(&event.pubkey)) {
            return Ok(verdict);
        }
        match event.kind.as_u16() {
            kinds::REPO_ANNOUNCEMENT => self.announcement(event, source).await,
            kinds::REPO_STATE => self.state(event, source).await,
            kinds::PULL_REQUEST | kinds::PULL_REQUEST_UPDATE => self.pull_request(event, source).await,
            kinds::DELETION => Ok(decide::deletion(&event.pubkey, &self.deletion_facts(event).await?)),
            kinds::USER_GRASP_LIST => Ok(Verdict::Accept),
            _ => self.related(event, source).await,
        }
    }

    /// Holds `entry`, lets the git-data step run, and reports whether it was released
    /// right away (its data was already here). What stays held is handed to the hunter,
    /// which waits longer for events from clients (a push usually follows) than for synced
    /// ones.
    async fn hold_and_process(
        &self,
        mut entry: HeldEvent,
        source: EventSource,
    ) -> Result<Verdict, PolicyError> {
        let id = entry.event.id;
        let hunted = entry.kind != HeldKind::Dependent;
        let identifier = RepoIdentifier::new(&entry.identifier).ok();
        entry.client = source.client_address().map(crate::rate_limit::address_group);
        match self.hosting.hold(entry).await? {
            HoldOutcome::Held => {}
            HoldOutcome::Duplicate => {
                return Ok(Verdict::Hold { message: DUPLICATE_HELD_MESSAGE.to_owned() })
            }
            HoldOutcome::Refused(full) => return Ok(self.purgatory_full(&id, full)),
        }
        if let Some(identifier) = identifier {
            let report = self.hosting.process(&identifier, Arrival::Held(id)).await;
            if report.released.iter().any(|(released, _)| *released == id) {
                return Ok(Verdict::Released);
            }
            if report.superseded.contains(&id) {
                // Its data was here but the store keeps a newer version instead.
                return Ok(Verdict::reject(
                    Prefix::Invalid,
                    "superseded",
                    "a newer version of this event is already stored",
                ));
            }
            if hunted {
                self.hunt.enqueue(identifier.as_str(), source);
            }
        }
        Ok(held())
    }

    /// The answer to an event purgatory has no room for.
    fn purgatory_full(&self, id: &EventId, full: CapExceeded) -> Verdict {
        tracing::info!(event_id = %id, cap = full.kind.as_str(), "purgatory cap full: event refused");
        self.hosting.count_purgatory_refusal(full.kind);
        let prefix = if full.is_server_wide() { Prefix::Restricted } else { Prefix::RateLimited };
        Verdict::reject(prefix, "purgatory_full", full.message())
    }

    async fn announcement(&self, event: &Event, source: EventSource) -> Result<Verdict, PolicyError> {
        let ann = match RepoAnnouncement::parse(event) {
            Ok(ann) => ann,
            Err(e) => return Ok(malformed(e)),
        };
        let d = ann.identifier.as_str();
        let origin = self.hosting.origin();
        let stored = self.hosting.store().announcements(d).await?;
        let held = self.hosting.held_announcements(d);
        let own_held = held.iter().find(|(_, a)| a.owner == ann.owner).map(|(e, _)| e.clone());
        let mut all = stored.clone();
        all.extend(held.iter().map(|(_, a)| a.clone()));

        let lists_us = ListsService::of(&ann, origin).both();
        // GRASP-05: the operator archives it although it does not list us.
        let archived = !lists_us && curate::archived(&self.archive, &ann.owner, d);
        if lists_us {
            if let Some(verdict) = curate::hosting_allowed(&self.curation.lists(), &ann.owner, d) {
                return Ok(verdict);
            }
        }
        let verdict = if archived { Verdict::Accept } else { decide::announcement(&ann, origin, &all) };
        if let Verdict::Reject(_) = verdict {
            // The owner of a repository still in purgatory no longer lists us: let it go.
            if let Some(old) = own_held.filter(|old| old.event.created_at <= event.created_at) {
                let removed = self.hosting.purgatory().remove(&[old.event.id]).await?;
                self.hosting.discard(removed).await;
            }
            return Ok(verdict);
        }
        if !lists_us && !archived {
            // A maintainer companion: fine as soon as a stored announcement vouches for it;
            // if only a held one does, it waits for that one.
            if decide::announcement(&ann, origin, &stored) == Verdict::Accept {
                return Ok(Verdict::Accept);
            }
            // Only a held announcement (of another author) vouches: wait for it.
            let root = held.iter().find(|(_, root)| root.owner != ann.owner && root.names(&ann.owner));
            let Some((root_entry, _)) = root else { return Ok(Verdict::Accept) };
            let mut entry = self.hosting.purgatory().entry(event.clone(), HeldKind::Dependent, d);
            entry.waits_for = Some(root_entry.event.id);
            entry.expires_at = root_entry.expires_at;
            return self.hold_and_process(entry, source).await;
        }
        if stored.iter().any(|a| a.owner == ann.owner) {
            // A newer version of an announcement we already serve.
            return Ok(Verdict::Accept);
        }
        // A new repository: create it now so the push (or, archived, the fetch) can land,
        // and hold the announcement. Not when purgatory has no room for it: a refused
        // announcement costs no `git init`.
        let mut entry = self.hosting.purgatory().entry(event.clone(), HeldKind::Announcement, d);
        entry.client = source.client_address().map(crate::rate_limit::address_group);
        if let Some(full) = self.hosting.purgatory().cap_refusing(&entry) {
            return Ok(self.purgatory_full(&event.id, full));
        }
        let repo = RepoRef::new(ann.owner, ann.identifier.clone());
        let created = self.hosting.repos().create(&repo).await?;
        if created {
            tracing::info!(repo = %repo, "repository created for a held announcement");
        }
        let mut created_repo = created;
        if let Some(old) = own_held {
            if old.event.created_at > event.created_at {
                return Ok(Verdict::reject(
                    Prefix::Invalid,
                    "stale_announcement",
                    "a newer announcement for this repository is already waiting for its git data",
                ));
            }
            created_repo |= old.created_repo;
            self.hosting.purgatory().remove(&[old.event.id]).await?;
        }
        entry.created_repo = created_repo;
        self.hold_and_process(entry, source).await
    }

    async fn state(&self, event: &Event, source: EventSource) -> Result<Verdict, PolicyError> {
        let state = match RepoState::parse(event) {
            Ok(state) => state,
            Err(e) => return Ok(malformed(e)),
        };
        let d = state.identifier.as_str();
        let all = self.hosting.maintainer_announcements(d).await?;
        let latest_own =
            self.hosting.store().latest_state_by(state.author, d).await?.map(|e| (e.created_at, e.id));
        match decide::state(self.hosting.maintainer_model(), &state, &all, latest_own) {
            Verdict::Accept => {
                let entry = self.hosting.purgatory().entry(event.clone(), HeldKind::State, d);
                self.hold_and_process(entry, source).await
            }
            other => Ok(other),
        }
    }

    /// The identifier of the hosted (stored or held) repository a pull request tags.
    async fn tagged_repository(&self, refs: &EventReferences) -> Result<Option<String>, PolicyError> {
        for c in refs.coordinates.iter().filter(|c| c.kind == kinds::REPO_ANNOUNCEMENT) {
            if self.hosting.store().at_coordinate(c).await?.is_some()
                || self.hosting.held_announcements(&c.identifier).iter().any(|(_, a)| a.owner == c.pubkey)
            {
                return Ok(Some(c.identifier.clone()));
            }
        }
        Ok(None)
    }

    async fn pull_request(&self, event: &Event, source: EventSource) -> Result<Verdict, PolicyError> {
        let refs = EventReferences::of(event);
        let facts = PullRequestFacts {
            hosted: self.tagged_repository(&refs).await?,
            prs_hosting: self.prs_hosting,
            prs: crate::authorization::prs::named_repositories(event, self.hosting.origin())
                .into_iter()
                .next()
                .map(|repo| repo.identifier.as_str().to_owned()),
            has_commit: raw_commit_tag(event).is_some(),
        };
        let identifier = match decide::pull_request(&facts) {
            Ok(identifier) => identifier,
            Err(verdict) => return Ok(verdict),
        };
        if facts.hosted.is_none() {
            // Taken through GRASP-06: the operator's allow list decides who gets /prs/ hosting.
            let tagged = curate::repositories_of(event);
            if let Some(verdict) =
                curate::pull_request_allowed(&self.curation.lists(), &event.pubkey, &tagged)
            {
                return Ok(verdict);
            }
        }
        let entry = self.hosting.purgatory().entry(event.clone(), HeldKind::PullRequest, &identifier);
        self.hold_and_process(entry, source).await
    }

    async fn related(&self, event: &Event, source: EventSource) -> Result<Verdict, PolicyError> {
        let refs = EventReferences::of(event);
        let facts = self.relation_facts(event, &refs).await?;
        if decide::related(facts) == Verdict::Accept {
            return Ok(Verdict::Accept);
        }
        // Related only to something still in purgatory: wait for it.
        if let Some(parent) = self.held_parent(&refs) {
            let mut entry =
                self.hosting.purgatory().entry(event.clone(), HeldKind::Dependent, &parent.identifier);
            entry.waits_for = Some(parent.event.id);
            entry.expires_at = parent.expires_at;
            return self.hold_and_process(entry, source).await;
        }
        Ok(decide::related(facts))
    }

    /// A held event this event references (by coordinate or id), if any.
    fn held_parent(&self, refs: &EventReferences) -> Option<HeldEvent> {
        let purgatory = self.hosting.purgatory();
        let by_id = refs.event_ids.iter().find_map(|id| purgatory.get(id));
        by_id.or_else(|| refs.coordinates.iter().find_map(|c| self.hosting.held_at(c).into_iter().next()))
    }

    async fn relation_facts(
        &self,
        event: &Event,
        refs: &EventReferences,
    ) -> Result<RelationFacts, PolicyError> {
        let store = self.hosting.store();
        let mut facts = RelationFacts::default();
        for coordinate in &refs.coordinates {
            if store.at_coordinate(coordinate).await?.is_some() {
                facts.tags_stored_coordinate = true;
                return Ok(facts);
            }
        }
        if !store.events_among(&refs.event_ids).await?.is_empty() {
            facts.tags_stored_event = true;
            return Ok(facts);
        }
        let own_coordinate = RepoCoordinate::of_event(event);
        facts.tagged_by_stored = store.is_referenced(&event.id, own_coordinate.as_ref()).await?;
        Ok(facts)
    }

    /// NIP-09 names targets with `e` and `a` tags only (not `E`/`A`/`q`). Held events count
    /// as known targets.
    async fn deletion_facts(&self, event: &Event) -> Result<DeletionFacts, PolicyError> {
        let purgatory = self.hosting.purgatory();
        let ids: Vec<EventId> = event.tags.event_ids().copied().take(MAX_REFERENCES).collect();
        let targets = self.hosting.store().events_among(&ids).await?;
        let mut authors: Vec<_> = targets.iter().map(|e| e.pubkey).collect();
        authors.extend(ids.iter().filter_map(|id| purgatory.get(id)).map(|e| e.event.pubkey));
        let mut coordinates = Vec::new();
        for c in event.tags.coordinates().take(MAX_REFERENCES) {
            let c = RepoCoordinate {
                kind: c.kind.as_u16(),
                pubkey: c.public_key,
                identifier: c.identifier.clone(),
            };
            let known = self.hosting.store().at_coordinate(&c).await?.is_some()
                || !self.hosting.held_at(&c).is_empty();
            coordinates.push((c, known));
        }
        Ok(DeletionFacts { stored_target_authors: authors, coordinates })
    }

    async fn after_store(&self, event: &Event) {
        match event.kind.as_u16() {
            kinds::DELETION => self.hosting.purge_deleted(event).await,
            kinds::REPO_ANNOUNCEMENT => {
                // A replaced or companion announcement can change maintainer sets.
                if let Ok(ann) = RepoAnnouncement::parse(event) {
                    self.hosting.process(&ann.identifier, Arrival::Announcements).await;
                }
            }
            _ => {}
        }
    }
}

impl EventPolicy for Ingest {
    fn evaluate<'a>(&'a self, event: &'a Event, source: EventSource) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            self.decide(event, source).await.unwrap_or_else(|e| {
                tracing::warn!(event_id = %event.id, error = %e, "policy failed");
                Verdict::reject(Prefix::Error, "internal", "could not process this event; try again later")
            })
        })
    }

    fn stored<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(self.after_store(event))
    }
}
