//! Who Sync Plus follows, read from the store: the owners and listed maintainers of the
//! hosted repositories, the authors of their roots (issues, patches, pull requests), and
//! the participants of those threads (authors of stored events that reference a root by
//! `e`, `E` or `q`). Bounded: the newest [`MAX_ROOTS`] roots and at most [`MAX_AUTHORS`]
//! people (owners and maintainers first, then root authors, then participants).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use nostr::{EventId, Filter, Kind, PublicKey, SingleLetterTag};

use crate::nip34::{kinds, EventReferences, RepoAnnouncement, RepoCoordinate};
use crate::store::{EventStore, StoreError};
use crate::sync::filters::ROOT_KINDS;

/// Roots looked at (the newest).
pub const MAX_ROOTS: usize = 5_000;

/// People followed.
pub const MAX_AUTHORS: usize = 5_000;

/// Root ids per participant query.
const ROOTS_PER_QUERY: usize = 200;

/// Events read per participant query.
const EVENTS_PER_QUERY: usize = 2_000;

/// The people of the hosted repositories and what they have to do with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Repository coordinates (`30617:<owner>:<d>`) by the keys that own or maintain them.
    pub repositories: BTreeMap<PublicKey, BTreeSet<String>>,
    /// Roots by their author.
    pub authored: BTreeMap<PublicKey, BTreeSet<EventId>>,
    /// Roots by the people who took part in them (without their own roots).
    pub participated: BTreeMap<PublicKey, BTreeSet<EventId>>,
    /// The hosted repositories each root belongs to.
    pub root_repositories: BTreeMap<EventId, BTreeSet<String>>,
}

impl Inventory {
    /// Everyone followed.
    pub fn authors(&self) -> BTreeSet<PublicKey> {
        self.repositories
            .keys()
            .chain(self.authored.keys())
            .chain(self.participated.keys())
            .copied()
            .collect()
    }

    /// The roots of the repository `coordinate`.
    pub fn roots_of(&self, coordinate: &str) -> BTreeSet<EventId> {
        self.root_repositories
            .iter()
            .filter(|(_, repos)| repos.contains(coordinate))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Drops people beyond `max`, keeping owners and maintainers, then root authors.
    fn bounded(mut self, max: usize) -> Self {
        let mut kept: HashSet<PublicKey> = HashSet::new();
        let mut keep = |pk: &PublicKey| {
            if kept.len() < max {
                kept.insert(*pk);
            }
            kept.contains(pk)
        };
        self.repositories.retain(|pk, _| keep(pk));
        self.authored.retain(|pk, _| keep(pk));
        self.participated.retain(|pk, _| keep(pk));
        self
    }
}

/// Reads the inventory from `store`.
pub async fn gather(store: &EventStore) -> Result<Inventory, StoreError> {
    let mut inventory = Inventory::default();
    let announcements = store.query(Filter::new().kind(Kind::Custom(kinds::REPO_ANNOUNCEMENT))).await?;
    let mut hosted: BTreeSet<String> = BTreeSet::new();
    for event in &announcements {
        let Ok(announcement) = RepoAnnouncement::parse(event) else { continue };
        let coordinate =
            RepoCoordinate::announcement(announcement.owner, announcement.identifier.as_str()).to_string();
        hosted.insert(coordinate.clone());
        for key in std::iter::once(announcement.owner).chain(announcement.listed()) {
            inventory.repositories.entry(key).or_default().insert(coordinate.clone());
        }
    }
    let roots = store.query(Filter::new().kinds(ROOT_KINDS.map(Kind::Custom)).limit(MAX_ROOTS)).await?;
    for root in &roots {
        let references = EventReferences::of(root);
        let repositories: BTreeSet<String> =
            references.coordinates.iter().map(ToString::to_string).filter(|c| hosted.contains(c)).collect();
        if repositories.is_empty() {
            continue;
        }
        inventory.root_repositories.insert(root.id, repositories);
        inventory.authored.entry(root.pubkey).or_default().insert(root.id);
    }
    let root_ids: Vec<EventId> = inventory.root_repositories.keys().copied().collect();
    for chunk in root_ids.chunks(ROOTS_PER_QUERY) {
        let values: Vec<String> = chunk.iter().map(EventId::to_hex).collect();
        for letter in ['e', 'E', 'q'] {
            let tag = SingleLetterTag::from_char(letter).expect("ASCII letter");
            let filter = Filter::new().custom_tags(tag, values.clone()).limit(EVENTS_PER_QUERY);
            for event in store.query(filter).await? {
                let references = EventReferences::of(&event);
                for root in chunk.iter().filter(|r| references.event_ids.contains(r)) {
                    let own = inventory.authored.get(&event.pubkey).is_some_and(|roots| roots.contains(root));
                    if !own {
                        inventory.participated.entry(event.pubkey).or_default().insert(*root);
                    }
                }
            }
        }
    }
    Ok(inventory.bounded(MAX_AUTHORS))
}
