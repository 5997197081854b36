//! What a person opening a repository URL in a browser should see: how to clone it, who
//! maintains it, the state it follows, and what waits in purgatory for it.

use std::collections::BTreeMap;

use nostr::nips::nip01::Coordinate;
use nostr::nips::nip19::{Nip19Coordinate, ToBech32};
use nostr::{Kind, PublicKey, RelayUrl};

use crate::git::{refs, GitError, RepoRef};
use crate::hosting::authoritative_state;
use crate::hunt::status::HuntStatus;
use crate::nip34::{kinds, RepoAnnouncement, RepoState};
use crate::purgatory::listing::{self, ListingEntry};
use crate::purgatory::HeldKind;
use crate::store::StoreError;
use crate::Grasp;

/// Most relay hints put into the repository's `naddr`.
const NADDR_RELAYS: usize = 3;

/// A hosted repository at a glance.
#[derive(Debug, Clone)]
pub struct RepoSummary {
    /// The owner's announcement, stored or still held.
    pub announcement: Option<RepoAnnouncement>,
    /// True when the owner's announcement is still held in purgatory.
    pub announcement_held: bool,
    /// The confirmed maintainers, the owner first when confirmed.
    pub maintainers: Vec<PublicKey>,
    /// Pubkeys a maintainer lists that have not listed one back yet (no authority).
    pub invited: Vec<PublicKey>,
    /// Why nobody has authority over the repository, when the owner's lead path is broken.
    pub no_authority: Option<&'static str>,
    /// The newest stored state by a maintainer (what the repository follows).
    pub state: Option<RepoState>,
    /// Branches and tags on disk now.
    pub refs: BTreeMap<String, String>,
    /// The branch HEAD points at on disk.
    pub head: Option<String>,
    /// Held events for this identifier and `refs/nostr` placeholders of this repository,
    /// soonest deadline first.
    pub held: Vec<ListingEntry>,
    /// The NIP-19 `naddr` of the announcement, with this server's relay as the first hint,
    /// for links to Nostr git clients.
    pub naddr: String,
    /// The relay URL of this server as the owner announced it (`ws://` or `wss://`).
    pub relay_url: String,
}

/// Why a summary could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// Reading events failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the repository failed.
    #[error(transparent)]
    Git(#[from] GitError),
}

/// The `naddr` of `repo`'s announcement with up to [`NADDR_RELAYS`] relay hints.
pub fn naddr(repo: &RepoRef, relays: &[String]) -> String {
    let coordinate = Coordinate::new(Kind::Custom(kinds::REPO_ANNOUNCEMENT), repo.owner)
        .identifier(repo.identifier.as_str());
    let hints = relays.iter().filter_map(|r| RelayUrl::parse(r).ok()).take(NADDR_RELAYS);
    Nip19Coordinate::new(coordinate, hints).to_bech32().expect("a coordinate always encodes")
}

impl Grasp {
    /// Summarises a hosted repository; `None` when it does not exist here.
    pub async fn repository_summary(&self, repo: &RepoRef) -> Result<Option<RepoSummary>, SummaryError> {
        if !self.repositories().exists(repo) {
            return Ok(None);
        }
        let d = repo.identifier.as_str();
        // What the repository follows is decided by stored (released) states only; held
        // announcements count for the maintainer set, as they do for push authorization.
        let store = self.hosting().store();
        let announcement_held = !store.announcements(d).await?.iter().any(|a| a.owner == repo.owner)
            && self.hosting().held_announcements(d).iter().any(|(_, a)| a.owner == repo.owner);
        let announcements = self.hosting().maintainer_announcements(d).await?;
        let states = crate::authorization::EventView::states(store, d).await?;
        let set = self.hosting().maintainer_set(repo.owner, &announcements);
        let state = authoritative_state(&set, &states).cloned();
        let maintainers = set
            .members()
            .filter(|m| **m == repo.owner)
            .chain(set.members().filter(|m| **m != repo.owner))
            .copied()
            .collect();
        let invited = set.invited().copied().collect();
        let no_authority = set.no_authority().map(|reason| reason.describe());
        let announcement = announcements.into_iter().find(|a| a.owner == repo.owner);

        let origin = self.origin();
        let announced = announcement.as_ref().map(|a| a.relays.as_slice()).unwrap_or_default();
        let relay_url = announced
            .iter()
            .find(|u| origin.is_relay_url(u))
            .cloned()
            .unwrap_or_else(|| format!("ws://{}", origin.service_address()));
        let hints: Vec<String> = std::iter::once(relay_url.clone())
            .chain(announced.iter().filter(|u| !origin.is_relay_url(u)).cloned())
            .collect();

        let purgatory = self.purgatory();
        let held: Vec<_> = HeldKind::ALL.iter().flat_map(|kind| purgatory.held_for(d, *kind)).collect();
        let placeholders = purgatory.placeholders_in(repo);

        let path = self.repositories().path(repo);
        let hunt_status = HuntStatus::path(&self.config().relay_data_path);
        let (refs, head, hunt) = tokio::task::spawn_blocking(move || -> Result<_, GitError> {
            let git = refs::open(&path)?;
            let head = git
                .find_reference("HEAD")
                .ok()
                .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_owned));
            // When the server next hunts for held data (as `purgatory list` shows it).
            let hunt = HuntStatus::read(&hunt_status).unwrap_or_default();
            Ok((refs::branches_and_tags(&git)?, head, hunt))
        })
        .await
        .map_err(GitError::from)??;
        Ok(Some(RepoSummary {
            announcement,
            announcement_held,
            maintainers,
            invited,
            no_authority,
            state,
            refs,
            head,
            held: listing::listing(&held, &placeholders, &hunt),
            naddr: naddr(repo, &hints),
            relay_url,
        }))
    }
}

#[cfg(test)]
mod tests {
    use nostr::nips::nip19::FromBech32;
    use nostr::Keys;

    use super::*;
    use crate::nip34::RepoIdentifier;

    #[test]
    fn naddr_names_the_announcement_with_relay_hints() {
        let owner = Keys::generate().public_key();
        let repo = RepoRef::new(owner, RepoIdentifier::new("my repo").unwrap());
        let relays =
            ["wss://git.example.com".to_owned(), "not a url".to_owned(), "wss://r.example".to_owned()];
        let decoded = Nip19Coordinate::from_bech32(&naddr(&repo, &relays)).unwrap();
        assert_eq!(decoded.kind, Kind::Custom(30617));
        assert_eq!(decoded.public_key, owner);
        assert_eq!(decoded.identifier, "my repo");
        let hints: Vec<String> = decoded.relays.iter().map(|r| r.to_string()).collect();
        assert_eq!(hints, vec!["wss://git.example.com", "wss://r.example"]);
    }
}
