//! What authorization reads: the events it depends on, from the store and from held events.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use futures::future::BoxFuture;
use nostr::{Event, EventId, Filter, Kind};
use nostr_database::DatabaseEventStatus;

use crate::git::RepoRef;
use crate::maintainers::MaintainerModel;
use crate::nip34::{kinds, RepoAnnouncement, RepoState};
use crate::store::{EventStore, StoreError};

/// What the id of a pushed `refs/nostr/<id>` ref names here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// A pull request (1618) or pull request update (1619), stored or held: its commit goes
    /// there.
    PullRequest(Box<Event>),
    /// Another kind of event, stored or held: nothing may be pushed under its id.
    Other(Kind),
    /// An event its author deleted (NIP-09).
    Deleted,
}

/// The placeholders around a push: how many wait in the repository and for the client, and
/// which ids already wait in the repository (pushing one of those again makes no new one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaceholderRoom {
    /// Placeholders waiting in the repository.
    pub in_repository: usize,
    /// Placeholders the client's address group has waiting (`None`: address unknown).
    pub of_client: Option<usize>,
    /// Ids of the placeholders waiting in the repository.
    pub waiting: HashSet<EventId>,
}

/// Read access to the events authorization depends on. The event store implements it;
/// purgatory adds held events on top.
pub trait EventView: Send + Sync {
    /// Every announcement with `identifier`, from any author.
    fn announcements<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RepoAnnouncement>, StoreError>>;

    /// Every state event with `identifier` that may authorize a push, from any author.
    fn states<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, Result<Vec<RepoState>, StoreError>>;

    /// What each of `ids` names, for those known here (stored, held or deleted).
    fn named_events<'a>(
        &'a self,
        ids: &'a [EventId],
    ) -> BoxFuture<'a, Result<HashMap<EventId, Named>, StoreError>>;

    /// The maintainer rule to decide with (default: maintainer model v3).
    fn maintainer_model(&self) -> MaintainerModel {
        MaintainerModel::default()
    }

    /// The placeholders around a push of the `refs/nostr` ids `ids` to `repo` from the
    /// client address group `client` (none where nothing is held: a bare store).
    fn placeholders(&self, repo: &RepoRef, client: Option<IpAddr>, ids: &[EventId]) -> PlaceholderRoom {
        let _ = (repo, ids);
        PlaceholderRoom { of_client: client.map(|_| 0), ..PlaceholderRoom::default() }
    }
}

/// True for a pull request (1618) or pull request update (1619).
pub fn is_pull_request(event: &Event) -> bool {
    matches!(event.kind.as_u16(), kinds::PULL_REQUEST | kinds::PULL_REQUEST_UPDATE)
}

impl EventView for EventStore {
    fn announcements<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RepoAnnouncement>, StoreError>> {
        Box::pin(EventStore::announcements(self, identifier))
    }

    fn states<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, Result<Vec<RepoState>, StoreError>> {
        Box::pin(async move {
            let filter = Filter::new().kind(Kind::Custom(kinds::REPO_STATE)).identifier(identifier);
            Ok(self.query(filter).await?.iter().filter_map(|e| RepoState::parse(e).ok()).collect())
        })
    }

    fn named_events<'a>(
        &'a self,
        ids: &'a [EventId],
    ) -> BoxFuture<'a, Result<HashMap<EventId, Named>, StoreError>> {
        Box::pin(async move {
            let mut named: HashMap<EventId, Named> =
                self.events_among(ids).await?.into_iter().map(|e| (e.id, Named::of(e))).collect();
            let unknown: Vec<EventId> = ids.iter().filter(|id| !named.contains_key(id)).copied().collect();
            for id in unknown {
                if self.status(&id).await? == DatabaseEventStatus::Deleted {
                    named.insert(id, Named::Deleted);
                }
            }
            Ok(named)
        })
    }
}

impl Named {
    /// What a known event is to a `refs/nostr` push.
    pub fn of(event: Event) -> Self {
        if is_pull_request(&event) {
            Named::PullRequest(Box::new(event))
        } else {
            Named::Other(event.kind)
        }
    }
}
