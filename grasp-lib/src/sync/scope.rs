//! Reads what this server hosts, for sync: the [`SyncScope`] the filters cover, and the
//! announcements whose `relays` tags name the peers.

use nostr::{Filter, Kind};

use super::filters::{SyncScope, ROOT_KINDS};
use crate::hosting::Hosting;
use crate::nip34::{kinds, RepoAnnouncement, RepoCoordinate};
use crate::purgatory::HeldKind;
use crate::store::StoreError;

/// What sync needs to know about the hosted repositories.
#[derive(Debug, Clone, Default)]
pub struct Hosted {
    /// What the filters cover.
    pub scope: SyncScope,
    /// Every stored announcement: their `relays` tags are the peers. Held ones are not:
    /// anyone can make the server hold an announcement, so its relays are not dialed.
    pub announcements: Vec<RepoAnnouncement>,
}

/// Gathers [`Hosted`] from the store and purgatory.
///
/// Served repositories are those with a stored announcement (including maintainers'
/// announcements, whose coordinates events may tag); a held announcement is a repository
/// still in purgatory, which syncs only its states.
pub async fn gather(hosting: &Hosting) -> Result<Hosted, StoreError> {
    let mut hosted = Hosted::default();
    let stored = hosting.store().query(Filter::new().kind(Kind::Custom(kinds::REPO_ANNOUNCEMENT))).await?;
    for event in &stored {
        let Ok(announcement) = RepoAnnouncement::parse(event) else { continue };
        let coordinate = RepoCoordinate::announcement(announcement.owner, announcement.identifier.as_str());
        hosted.scope.served_coordinates.insert(coordinate.to_string());
        hosted.scope.state_identifiers.insert(announcement.identifier.as_str().to_owned());
        hosted.announcements.push(announcement);
    }
    for entry in hosting.purgatory().held_of_kind(HeldKind::Announcement) {
        let Ok(announcement) = RepoAnnouncement::parse(&entry.event) else { continue };
        hosted.scope.state_identifiers.insert(announcement.identifier.as_str().to_owned());
    }
    let roots = hosting.store().negentropy_items(Filter::new().kinds(ROOT_KINDS.map(Kind::Custom))).await?;
    hosted.scope.roots = roots.into_iter().map(|(id, _)| id).collect();
    Ok(hosted)
}
