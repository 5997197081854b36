//! What push authorization reads from hosting: stored **and** held events.

use std::collections::HashMap;
use std::net::IpAddr;

use futures::future::BoxFuture;
use nostr::EventId;

use super::hub::Hosting;
use crate::authorization::{EventView, Named, PlaceholderRoom};
use crate::git::RepoRef;
use crate::maintainers::MaintainerModel;
use crate::nip34::{RepoAnnouncement, RepoState};
use crate::store::StoreError;

/// Push authorization sees stored **and** held events.
impl EventView for Hosting {
    fn announcements<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RepoAnnouncement>, StoreError>> {
        Box::pin(self.maintainer_announcements(identifier))
    }

    fn maintainer_model(&self) -> MaintainerModel {
        self.maintainer_model
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
